"""Session events: the event store (a transactional outbox) and the ``events:session`` channel.

Every event has one envelope, built here and nowhere else::

    {"event_id", "event_type", "aggregate_type": "session", "aggregate_id",
     "occurred_at", "payload": {...}}

and is published with its ``sequence`` added.

How an event travels:

1. ``record`` writes it to the ``Event`` table inside the transaction of the
   change it describes. A rollback takes the event with it; a commit keeps it.
   On PostgreSQL a transaction-scoped advisory lock makes events take their
   sequence numbers in commit order, so ``sequence > N`` never skips one.
2. After the commit, the same process publishes it to Redis at once and marks
   it published. It holds an event back when an older event of the same
   session is still unpublished, so a subscriber sees each session in order.
3. Whatever could not be published (Redis down, a network error, the process
   killed between commit and publish) stays unpublished and ``relay_events``
   delivers it later, in sequence order.

Delivery is therefore at least once: a consumer deduplicates by ``event_id``.
When Redis is not configured the events are stored and logged, not published;
when it is down the request still succeeds and the failure is logged once.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

if TYPE_CHECKING:
    from .models import Event, Session

log = logging.getLogger("sessions_app.events")

CREATED = "session.created"
UPDATED = "session.updated"
DELETED = "session.deleted"
RECOVERED = "session.recovered"

# pg_advisory_xact_lock key that orders event numbering by commit ("sess" + "evnt").
EVENT_ORDER_LOCK = 0x73657373_65766E74
# pg_try_advisory_lock key that lets one relay at a time publish.
RELAY_LOCK = EVENT_ORDER_LOCK + 1


def envelope(event_type: str, session_id: Any, payload: dict) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "aggregate_type": "session",
        "aggregate_id": str(session_id),
        "occurred_at": timezone.now().isoformat(),
        "payload": payload,
    }


def session_created(session: Session) -> dict:
    payload = {
        "agent_id": str(session.agent_id),
        "session_type": session.session_type,
        "runtime_backend": session.runtime_backend,
        "status": session.status,
    }
    if session.parent_id:
        payload["parent_id"] = str(session.parent_id)
    return envelope(CREATED, session.pk, payload)


def session_updated(session: Session, updates: list[str], previous_status: str | None) -> dict:
    payload: dict[str, Any] = {
        "agent_id": str(session.agent_id),
        "status": session.status,
        "updates": list(updates),
    }
    if previous_status is not None and previous_status != session.status:
        payload["previous_status"] = previous_status
        if session.status == "crashed" and session.crash_reason:
            payload["crash_reason"] = session.crash_reason
    return envelope(UPDATED, session.pk, payload)


def session_deleted(session: Session) -> dict:
    return envelope(DELETED, session.pk, {"agent_id": str(session.agent_id), "status": session.status})


def session_recovered(session: Session) -> dict:
    payload: dict[str, Any] = {
        "agent_id": str(session.agent_id),
        "recovery_attempts": session.recovery_attempts,
    }
    resume_prompt = session.checkpoint.get("resume_prompt") if isinstance(session.checkpoint, dict) else None
    if resume_prompt is not None:
        payload["resume_prompt"] = resume_prompt
    return envelope(RECOVERED, session.pk, payload)


class Publisher:
    """One Redis connection pool per process, created lazily (after gunicorn forks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._client_url = ""
        self.failing = False
        self._warned_unconfigured = False

    def _get_client(self, url: str) -> redis.Redis:
        with self._lock:
            if self._client is None or self._client_url != url:
                self._client = redis.Redis.from_url(
                    url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=30
                )
                self._client_url = url
            return self._client

    @property
    def configured(self) -> bool:
        return bool(settings.REDIS_URL)

    def send(self, messages: list[dict]) -> None:
        """Publish in order; raise redis.RedisError/OSError when Redis did not take them all."""
        client = self._get_client(settings.REDIS_URL)
        channel = settings.EVENTS_CHANNEL
        encoded = [json.dumps(m, separators=(",", ":"), default=str) for m in messages]
        if len(encoded) == 1:
            client.publish(channel, encoded[0])
            return
        pipe = client.pipeline(transaction=False)
        for data in encoded:
            pipe.publish(channel, data)
        pipe.execute()

    def publish(self, messages: list[dict]) -> bool:
        """Publish; answer whether Redis took them. Never raises; logs a failure once."""
        url = settings.REDIS_URL
        if not url:
            if not self._warned_unconfigured:
                self._warned_unconfigured = True
                log.warning("REDIS_URL is not set: events are stored and logged here, not published")
            for message in messages:
                log.info("event %s", json.dumps(message, default=str))
            return False
        try:
            self.send(messages)
        except (redis.RedisError, OSError) as exc:
            if not self.failing:
                self.failing = True
                log.warning("Cannot publish events to Redis at %s: %s", _safe_url(url), exc)
            return False
        if self.failing:
            self.failing = False
            log.warning("Redis at %s is reachable again: publishing events", _safe_url(url))
        return True


def _safe_url(url: str) -> str:
    # Never log a password.
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


publisher = Publisher()


# --- Recording (inside the transaction) -------------------------------------


def record(event: dict) -> None:
    """Store the event with the change being made; publish it after the commit."""
    if not settings.EVENT_STORE:
        transaction.on_commit(lambda: publisher.publish([event]), robust=True)
        return
    from .models import Event

    payload = event["payload"]
    row = Event(
        event_id=event["event_id"],
        event_type=event["event_type"],
        aggregate_type=event["aggregate_type"],
        aggregate_id=event["aggregate_id"],
        agent_id=payload.get("agent_id"),
        payload=payload,
        occurred_at=datetime.fromisoformat(event["occurred_at"]),
    )
    connection = transaction.get_connection()
    with transaction.atomic(savepoint=False):  # joins the caller's transaction, no savepoint
        if connection.vendor == "postgresql":
            _insert_in_commit_order(connection, row)
        else:  # SQLite: writers are serialised already
            row.save(force_insert=True)
            row.has_backlog = None
        transaction.on_commit(_Deliver(row), robust=True)


# One round trip: take the event-order lock, insert, and learn whether the
# session has older events that are still unpublished (its backlog).
_INSERT_SQL = """
WITH event_order AS (SELECT pg_advisory_xact_lock(%s))
INSERT INTO {table} (event_id, event_type, aggregate_type, aggregate_id, agent_id, payload, occurred_at)
SELECT %s, %s, %s, %s, %s, %s::jsonb, %s FROM event_order
RETURNING sequence, {backlog}
"""
_BACKLOG_SQL = "EXISTS (SELECT 1 FROM {table} e WHERE e.aggregate_id = %s AND e.published_at IS NULL)"


def _insert_in_commit_order(connection, row: Event) -> None:
    table = row._meta.db_table
    backlog = "false" if row.event_type == CREATED else _BACKLOG_SQL.format(table=table)
    params = [
        EVENT_ORDER_LOCK,
        row.event_id,
        row.event_type,
        row.aggregate_type,
        row.aggregate_id,
        row.agent_id,
        json.dumps(row.payload),
        row.occurred_at,
    ]
    if row.event_type != CREATED:
        params.append(row.aggregate_id)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL.format(table=table, backlog=backlog), params)
        row.sequence, row.has_backlog = cursor.fetchone()


class _Deliver:
    """After-commit callback for one stored event.

    One callback per event (not one per transaction) so that Django drops the
    callbacks of a rolled-back savepoint together with its events.
    """

    def __init__(self, row: Event) -> None:
        self.row = row
        self.__qualname__ = "events.deliver"  # named in Django's log if it ever fails

    def __call__(self) -> None:
        deliver([self.row])


# How many older unpublished events of a session a request delivers before its own.
BACKLOG_LIMIT = 1000


def deliver(rows: list[Event]) -> int:
    """Publish freshly committed events at once and mark them; answer how many went out.

    A session's older events that are still unpublished (Redis was down) go
    out first, in order, so a subscriber never sees a session out of order and
    a session that is written to again heals its own backlog without waiting
    for the relay.
    """
    from .models import Event

    if not publisher.configured:
        publisher.publish([r.message() for r in rows])
        return 0
    first = min(r.sequence for r in rows)
    # Ask only for sessions that may have a backlog: on PostgreSQL the insert
    # already said (has_backlog); a session's creation never has one.
    known = {r.aggregate_id for r in rows if r.event_type != CREATED and getattr(r, "has_backlog", None) is not False}
    backlog = (
        list(
            Event.objects.filter(aggregate_id__in=known, published_at__isnull=True, sequence__lt=first).order_by(
                "sequence"
            )[: BACKLOG_LIMIT + 1]
        )
        if known
        else []
    )
    if len(backlog) > BACKLOG_LIMIT:  # a long outage: leave this session to the relay, in order
        held = {str(e.aggregate_id) for e in backlog}
        backlog = []
        rows = [r for r in rows if str(r.aggregate_id) not in held]
        if not rows:
            return 0
    batch = backlog + rows
    if not publisher.publish([r.message() for r in batch]):
        return 0
    mark_published([r.sequence for r in batch])
    return len(batch)


def mark_published(sequences: list[int]) -> None:
    """Record that Redis took these events.

    On PostgreSQL without waiting for the WAL flush: should the mark be lost
    in a crash, the relay only publishes the events again (at least once).
    """
    from .models import Event

    connection = transaction.get_connection()
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        Event.objects.filter(sequence__in=sequences).update(published_at=timezone.now())
        return
    # One round trip: the sequences are integers from our own table, safe to inline.
    listed = ",".join(str(int(n)) for n in sequences)
    with connection.cursor() as cursor:
        cursor.execute(
            "BEGIN; SET LOCAL synchronous_commit TO OFF; "
            f"UPDATE {Event._meta.db_table} SET published_at = now() WHERE sequence IN ({listed}); COMMIT;"
        )


# --- The relay --------------------------------------------------------------


class RelayBusy(Exception):
    """Another relay holds the relay lock."""


def relay_batch(batch_size: int = 500, *, grace_seconds: float | None = None) -> int:
    """Publish the oldest unpublished events in sequence order and mark them.

    Answers how many were published (0: nothing to do). Raises RelayBusy when
    another relay is at work and redis errors when Redis refuses; the caller
    backs off. Events younger than the grace period are left to the process
    that committed them, which publishes them at once.
    """
    from .models import Event

    grace = settings.RELAY_GRACE_SECONDS if grace_seconds is None else grace_seconds
    connection = transaction.get_connection()
    locked = connection.vendor == "postgresql"
    if locked:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [RELAY_LOCK])
            if not cursor.fetchone()[0]:
                raise RelayBusy()
    try:
        cutoff = timezone.now() - timedelta(seconds=grace)
        rows = list(
            Event.objects.filter(published_at__isnull=True, occurred_at__lte=cutoff).order_by("sequence")[:batch_size]
        )
        if not rows:
            return 0
        publisher.send([r.message() for r in rows])
        mark_published([r.sequence for r in rows])
        return len(rows)
    finally:
        if locked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [RELAY_LOCK])


def unpublished_count() -> int:
    from .models import Event

    return Event.objects.filter(published_at__isnull=True).count()


def run_relay(
    *,
    stop: threading.Event,
    batch_size: int = 500,
    idle_seconds: float = 1.0,
    once: bool = False,
    report: Callable[[int], None] | None = None,
    pause: float = 0.0,
) -> int:
    """Publish unpublished events until ``stop`` is set (or, with ``once``, until none is left).

    Backs off while Redis is down (1 s doubling to 30 s) and carries on by
    itself when it is back; waits while another relay holds the lock. Answers
    how many events it published.
    """
    from django.db import InterfaceError, OperationalError, close_old_connections

    total = 0
    backoff = 0.0
    while not stop.is_set():
        close_old_connections()
        try:
            sent = relay_batch(batch_size, grace_seconds=0 if once else None)
        except RelayBusy:
            if once:
                log.warning("Another relay holds the relay lock: leaving the events to it")
                return total
            stop.wait(idle_seconds)
            continue
        except (redis.RedisError, OSError) as exc:
            backoff = min(max(backoff * 2, 1.0), 30.0)
            if not publisher.failing:
                publisher.failing = True
                log.warning("Relay cannot reach Redis (%s); retrying with backoff", exc)
            if once:
                raise
            stop.wait(backoff)
            continue
        except (OperationalError, InterfaceError):
            log.exception("Relay pass failed on the database; retrying")
            stop.wait(idle_seconds)
            continue
        if publisher.failing:
            publisher.failing = False
            log.warning("Relay reached Redis again: delivering held events")
        backoff = 0.0
        total += sent
        if report is not None and sent:
            report(sent)
        if pause and sent:
            stop.wait(pause)
        if sent < batch_size:
            if once:
                return total
            stop.wait(idle_seconds)
    return total
