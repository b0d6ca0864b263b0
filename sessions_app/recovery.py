"""Liveness and crash recovery: the crash detector and the recovery queue (heartbeats: ``lifecycle``).

The status rules stay in ``lifecycle``: every move here goes through
``check_transition``, ``_apply_status`` and ``_save_change``, so a session
marked crashed by the detector or handed out by recovery publishes the same
``session.updated`` event (after commit) as one moved through PATCH.

Concurrency is settled by PostgreSQL, not by hope:

* The crash detector locks each batch with ``SELECT ... FOR UPDATE SKIP
  LOCKED`` in a short transaction and re-checks the condition on the locked
  row, so several detectors running at once never mark a session twice and a
  session the agent is writing to right now is left for the next pass.
* Recovery claims the oldest crashed session with ``FOR UPDATE SKIP LOCKED``
  (a work queue: concurrent callers each get a different session, or none)
  and moves it to ``active`` in the same transaction.
* Recovering one given session waits for its lock instead, then re-reads it:
  if a concurrent claim got there first it is no longer crashed (409).

On SQLite ``select_for_update`` is a no-op, but its writes are serialised
(``transaction_mode=IMMEDIATE``), which gives the same guarantees.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import events, lifecycle
from .models import Session

log = logging.getLogger(__name__)

Status = Session.Status

# crash_reason written by the crash detector.
HEARTBEAT_TIMEOUT = "heartbeat_timeout"
# Sessions marked per transaction. Each one stores its session.updated event in
# the same transaction, under the lock that orders all events, and API writes
# wait for that lock: measured, a batch of 500 held them up to 0.84 s, 100 up to 0.2 s.
DETECT_BATCH_SIZE = 100
_CRASH_FIELDS = ("id", "agent_id", "status", "last_activity_at", "updated_at", "version", "ended_at", "crash_reason")


# --- Errors (the API maps http_status and code; see exceptions._domain_response) ---


class RecoveryRefused(lifecycle.LifecycleError):
    """A recovery of a session that is not crashed, or has used up its attempts."""

    http_status = 409

    def __init__(self, session: Session, code: str, message: str) -> None:
        self.code = code
        self.current_status = session.status
        self.extra = {
            "current_status": session.status,
            "recovery_attempts": session.recovery_attempts,
            "max_recovery_attempts": settings.MAX_RECOVERY_ATTEMPTS,
        }
        super().__init__(message)


# --- Liveness ---------------------------------------------------------------


def mark_stale_sessions_crashed(
    stale_after: timedelta,
    *,
    batch_size: int = DETECT_BATCH_SIZE,
    stop: threading.Event | None = None,
    now: datetime | None = None,
) -> list[Session]:
    """One pass of the crash detector: mark ``active`` sessions idle for longer than ``stale_after`` as crashed.

    Each batch is one short transaction; the rows are locked with SKIP LOCKED
    and re-checked, so concurrent detectors (or an agent completing its
    session right now) never see a session marked twice. ``stop`` is checked
    between batches: a batch that has started always finishes.
    """
    cutoff = (now or timezone.now()) - stale_after
    marked: list[Session] = []
    while stop is None or not stop.is_set():
        with transaction.atomic():
            batch = list(
                Session.objects.select_for_update(skip_locked=True)
                .filter(status=Status.ACTIVE, last_activity_at__lt=cutoff)
                # Only what the move writes and the event reads: contexts can be large.
                .only(*_CRASH_FIELDS)
                .order_by("last_activity_at")[:batch_size]
            )
            moment = timezone.now()
            for session in batch:
                # The locked row is the current one: check again before writing.
                if session.status != Status.ACTIVE or session.last_activity_at >= cutoff:
                    continue
                previous = session.status
                lifecycle.check_transition(previous, Status.CRASHED)
                lifecycle._apply_status(session, Status.CRASHED, moment, HEARTBEAT_TIMEOUT)
                lifecycle._save_change(session, ["status"], ["ended_at", "crash_reason"], previous, moment)
                marked.append(session)
        if len(batch) < batch_size:
            break
    return marked


def run_crash_detector(
    stale_after: timedelta,
    *,
    interval: timedelta,
    stop: threading.Event,
    batch_size: int = DETECT_BATCH_SIZE,
    report: Callable[[list[Session]], None] | None = None,
) -> tuple[int, int]:
    """Run passes every ``interval`` until ``stop`` is set; answer (passes, sessions marked).

    A lost database connection is logged and retried at the next pass rather
    than ending the detector.
    """
    passes = total = 0
    while not stop.is_set():
        close_old_connections()
        try:
            marked = mark_stale_sessions_crashed(stale_after, batch_size=batch_size, stop=stop)
        except (OperationalError, InterfaceError):
            log.exception("Crash detector pass failed; retrying in %s", interval)
        else:
            passes += 1
            total += len(marked)
            if report is not None:
                report(marked)
        stop.wait(interval.total_seconds())
    return passes, total


# --- Recovery ---------------------------------------------------------------


def recovery_queue(
    *, agent_id: uuid.UUID | str | None = None, session_type: str | None = None, runtime_backend: str | None = None
) -> QuerySet[Session]:
    """Crashed sessions that may still be recovered, oldest crash first (index session_crashed_queue)."""
    queryset = Session.objects.filter(status=Status.CRASHED, recovery_attempts__lt=settings.MAX_RECOVERY_ATTEMPTS)
    if agent_id is not None:
        queryset = queryset.filter(agent_id=agent_id)
    if session_type is not None:
        queryset = queryset.filter(session_type=session_type)
    if runtime_backend is not None:
        queryset = queryset.filter(runtime_backend=runtime_backend)
    return queryset.order_by("ended_at", "created_at")


def claim_next(
    *, agent_id: uuid.UUID | str | None = None, session_type: str | None = None, runtime_backend: str | None = None
) -> Session | None:
    """Hand the oldest matching crashed session to the caller, now active; None when there is none.

    SKIP LOCKED makes this a work queue: concurrent callers never receive the
    same session, and none of them waits for another.
    """
    with transaction.atomic():
        queue = recovery_queue(agent_id=agent_id, session_type=session_type, runtime_backend=runtime_backend)
        session = queue.select_for_update(skip_locked=True).first()
        if session is None:
            return None
        _recover(session)
    return session


def recover_session(session_id: uuid.UUID | str) -> Session:
    """Recover one given session; RecoveryRefused if it is not crashed or has used up its attempts."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        if session.status != Status.CRASHED:
            raise RecoveryRefused(
                session, "not_crashed", f"The session is {session.status}: only crashed sessions are recovered."
            )
        if not session.recoverable:
            raise RecoveryRefused(
                session,
                "recovery_exhausted",
                f"The session has used up its {settings.MAX_RECOVERY_ATTEMPTS} recovery attempts.",
            )
        _recover(session)
    return session


def _recover(session: Session) -> None:
    """crashed -> active, one more attempt; the caller holds the row lock inside a transaction."""
    now = timezone.now()
    previous = session.status
    lifecycle.check_transition(previous, Status.ACTIVE)
    lifecycle._apply_status(session, Status.ACTIVE, now, None)
    session.recovery_attempts += 1
    session.recovered_at = now
    # post_save publishes session.updated (previous_status crashed); then session.recovered.
    lifecycle._save_change(
        session, ["status"], ["ended_at", "crash_reason", "recovery_attempts", "recovered_at"], previous, now
    )
    events.record(events.session_recovered(session))


@dataclass
class RecoveryRun:
    """What ``recover_crashed_sessions`` did (or, with dry_run, would do)."""

    sessions: list[Session] = field(default_factory=list)
    exhausted: int = 0
    dry_run: bool = False


def recover_crashed_sessions(
    *, agent_id: uuid.UUID | str | None = None, dry_run: bool = False, limit: int | None = None
) -> RecoveryRun:
    """Recover every recoverable crashed session (of one agent), one short transaction each."""
    exhausted = Session.objects.filter(status=Status.CRASHED, recovery_attempts__gte=settings.MAX_RECOVERY_ATTEMPTS)
    if agent_id is not None:
        exhausted = exhausted.filter(agent_id=agent_id)
    run = RecoveryRun(exhausted=exhausted.count(), dry_run=dry_run)
    if dry_run:
        queue = recovery_queue(agent_id=agent_id)
        run.sessions = list(queue[:limit] if limit is not None else queue)
        return run
    while limit is None or len(run.sessions) < limit:
        session = claim_next(agent_id=agent_id)
        if session is None:
            break
        run.sessions.append(session)
    return run
