"""The session's domain rules, in one place.

The API, the admin and the management commands all change sessions through
these functions and nothing else assigns ``status``. Each function runs in a
short transaction; a row that must be read before it is written is locked
(``select_for_update``) so concurrent writers never undo each other, and the
events that the model signals build go out only after the commit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import Checkpoint, IdempotencyKey, Session

Status = Session.Status

ALLOWED: dict[str, frozenset[str]] = {
    Status.ACTIVE: frozenset({Status.PAUSED, Status.COMPLETED, Status.CRASHED}),
    Status.PAUSED: frozenset({Status.ACTIVE, Status.COMPLETED, Status.CRASHED}),
    Status.CRASHED: frozenset({Status.ACTIVE, Status.COMPLETED}),
    Status.COMPLETED: frozenset(),
}

# Bookkeeping columns written with every change.
_BOOKKEEPING = ("updated_at", "last_activity_at", "version")


class LifecycleError(Exception):
    """Base of the domain errors; the API maps each to a status code."""


class InvalidTransition(LifecycleError):
    def __init__(self, current: str, requested: str) -> None:
        self.current = current
        self.requested = requested
        self.allowed = sorted(ALLOWED[current])
        moves = ", ".join(self.allowed) or "none: it is final"
        super().__init__(f"Cannot move a session from {current!r} to {requested!r}; allowed: {moves}.")


class VersionMismatch(LifecycleError):
    def __init__(self, current_version: int) -> None:
        self.current_version = current_version
        super().__init__(f'The session has changed: its version is now {current_version} (ETag "{current_version}").')


class InvalidChange(LifecycleError):
    """A change that is well-formed but makes no sense for this session."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class IdempotencyConflict(LifecycleError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"Idempotency-Key {key!r} was already used by this agent with a different request body.")


class SessionEnded(LifecycleError):
    """A heartbeat for a session that has ended (409)."""

    http_status = 409
    code = "session_ended"

    def __init__(self, current_status: str) -> None:
        self.current_status = current_status
        self.extra = {"current_status": current_status}
        super().__init__(f"The session is {current_status}: heartbeats are taken from active or paused sessions only.")


class CheckpointNotFound(LifecycleError):
    def __init__(self, number: int) -> None:
        self.number = number
        super().__init__(f"Checkpoint {number} is not in this session's history.")


# --- Status rules ---------------------------------------------------------


def check_transition(current: str, requested: str) -> bool:
    """Answer whether the move changes anything; raise if it is not allowed."""
    if requested == current:
        return False
    if requested not in ALLOWED[current]:
        raise InvalidTransition(current, requested)
    return True


def _apply_status(session: Session, new: str, now, crash_reason: str | None) -> None:
    session.status = new
    if new in Session.ENDED:
        session.ended_at = now
    else:
        session.ended_at = None
    if new == Status.CRASHED:
        session.crash_reason = crash_reason or session.crash_reason or ""
    else:
        session.crash_reason = ""


# --- JSON Merge Patch (RFC 7396) -------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- ETags ----------------------------------------------------------------


def etag_matches(header: str, version: int) -> bool:
    """If-Match: "*" or a list of (possibly weak) entity tags."""
    header = header.strip()
    if header == "*":
        return True
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == str(version):
            return True
    return False


# --- Create ---------------------------------------------------------------


def create_session(data: Mapping[str, Any], *, parent: Session | None = None) -> Session:
    now = timezone.now()
    session = Session(**data, parent=parent, created_at=now, updated_at=now, last_activity_at=now)
    if session.status in Session.ENDED:
        session.ended_at = now
    if session.status != Status.CRASHED:
        session.crash_reason = ""
    if session.checkpoint:
        session.checkpoint_seq = 1
    with transaction.atomic():
        session.save(force_insert=True)
        if session.checkpoint:
            _record_checkpoint(session, now)
    return session


def request_fingerprint(data: Mapping[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_session_idempotent(data: Mapping[str, Any], key: str, fingerprint: str) -> tuple[Session, bool]:
    """Create at most one session per (agent, key); answer (session, created).

    The unique index on (agent_id, key) settles races: concurrent requests
    wait on the first one's insert and then find its session. A key is
    remembered for IDEMPOTENCY_KEY_TTL_HOURS; after that it starts afresh.
    """
    agent_id = data["agent_id"]
    try:
        with transaction.atomic():
            session = create_session(data)
            IdempotencyKey.objects.create(agent_id=agent_id, key=key, request_hash=fingerprint, session=session)
            return session, True
    except IntegrityError:
        pass
    existing = IdempotencyKey.objects.select_related("session").filter(agent_id=agent_id, key=key).first()
    if existing is None:  # the first session was deleted meanwhile: start again
        return create_session_idempotent(data, key, fingerprint)
    if existing.created_at < timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS):
        IdempotencyKey.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
        return create_session_idempotent(data, key, fingerprint)
    if existing.request_hash != fingerprint:
        raise IdempotencyConflict(key)
    return existing.session, False


# --- Update ---------------------------------------------------------------


def update_session(
    session_id: uuid.UUID | str,
    changes: Mapping[str, Any],
    *,
    merge: bool = False,
    if_match: str | None = None,
) -> tuple[Session, list[str]]:
    """Apply a PATCH; answer the session and the fields that really changed.

    ``merge`` applies RFC 7396 to the JSON fields instead of replacing them.
    Only changed columns are written, under a row lock, so concurrent writers
    of different fields (or different keys, with ``merge``) never undo each other.
    """
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        if if_match is not None and not etag_matches(if_match, session.version):
            raise VersionMismatch(session.version)
        previous_status = session.status
        changed: list[str] = []
        for field in Session.WRITABLE_FIELDS:
            if field not in changes or field == "crash_reason":
                continue
            value = changes[field]
            if merge and field in Session.JSON_FIELDS:
                value = merge_patch(getattr(session, field), value)
            if getattr(session, field) != value:
                changed.append(field)
                if field != "status":
                    setattr(session, field, value)

        now = timezone.now()
        new_status = changes.get("status", session.status)
        crash_reason = changes.get("crash_reason")
        if crash_reason is not None and new_status != Status.CRASHED:
            raise InvalidChange("crash_reason", "Can only be given when the status becomes 'crashed'.")
        extra: list[str] = []
        if "status" in changed:
            check_transition(previous_status, new_status)
            _apply_status(session, new_status, now, crash_reason)
            extra = ["ended_at", "crash_reason"]
        elif crash_reason is not None and crash_reason != session.crash_reason:
            session.crash_reason = crash_reason
            changed.append("crash_reason")
        if not changed:
            return session, []
        _save_change(session, changed, extra, previous_status, now)
        if "checkpoint" in changed:
            _record_checkpoint(session, now)
    return session, changed


def _save_change(session: Session, changed: list[str], extra: Iterable[str], previous_status: str, now) -> None:
    session.updated_at = now
    session.last_activity_at = now
    session.version += 1
    if "checkpoint" in changed:  # the caller then records the history entry
        session.checkpoint_seq += 1
        extra = (*extra, "checkpoint_seq")
    session._event_updates = [f for f in Session.WRITABLE_FIELDS if f in changed]
    session._previous_status = previous_status
    session.save(update_fields=sorted({*changed, *extra, *_BOOKKEEPING}))


def change_status(
    session_id: uuid.UUID | str, new: str, *, crash_reason: str | None = None
) -> tuple[Session, list[str]]:
    changes: dict[str, Any] = {"status": new}
    if crash_reason is not None:
        changes["crash_reason"] = crash_reason
    return update_session(session_id, changes)


# --- Delete ---------------------------------------------------------------


def delete_session(session_id: uuid.UUID | str, *, if_match: str | None = None) -> Session:
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        if if_match is not None and not etag_matches(if_match, session.version):
            raise VersionMismatch(session.version)
        session.delete()  # cascades to history; post_delete publishes session.deleted
    return session


# --- Checkpoint history ---------------------------------------------------


def _record_checkpoint(session: Session, now) -> Checkpoint:
    """Append the session's current checkpoint to its history as entry ``checkpoint_seq``.

    The caller holds the session row (or has just created it) and has already
    counted the entry, so numbers never collide and no read is needed.
    """
    number = session.checkpoint_seq
    entry = Checkpoint.objects.create(session=session, number=number, checkpoint=session.checkpoint, created_at=now)
    keep = settings.CHECKPOINT_HISTORY_LIMIT
    if number > keep:
        Checkpoint.objects.filter(session=session, number__lte=number - keep).delete()
    return entry


def get_checkpoint(session_id: uuid.UUID | str, number: int) -> Checkpoint:
    entry = Checkpoint.objects.filter(session_id=session_id, number=number).first()
    if entry is None:
        Session.objects.only("pk").get(pk=session_id)  # unknown session: DoesNotExist
        raise CheckpointNotFound(number)
    return entry


def restore_checkpoint(
    session_id: uuid.UUID | str, number: int, *, if_match: str | None = None
) -> tuple[Session, list[str]]:
    """Make history entry ``number`` the current checkpoint again (as a new entry)."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        if if_match is not None and not etag_matches(if_match, session.version):
            raise VersionMismatch(session.version)
        entry = Checkpoint.objects.filter(session=session, number=number).first()
        if entry is None:
            raise CheckpointNotFound(number)
        now = timezone.now()
        session.checkpoint = entry.checkpoint
        _save_change(session, ["checkpoint"], (), session.status, now)
        _record_checkpoint(session, now)
    return session, ["checkpoint"]


# --- Fork -----------------------------------------------------------------


def fork_session(session_id: uuid.UUID | str, *, checkpoint_number: int | None = None) -> Session:
    source = Session.objects.get(pk=session_id)
    checkpoint = source.checkpoint
    if checkpoint_number is not None:
        checkpoint = get_checkpoint(source.pk, checkpoint_number).checkpoint
    data = {
        "agent_id": source.agent_id,
        "session_type": source.session_type,
        "runtime_backend": source.runtime_backend,
        "status": Status.ACTIVE,
        "context": source.context,
        "checkpoint": checkpoint,
    }
    return create_session(data, parent=source)


# --- Liveness -------------------------------------------------------------


def heartbeat(session_id: uuid.UUID | str) -> None:
    """Record that the agent is alive: one UPDATE, no event, no version change."""
    now = timezone.now()
    live = (Status.ACTIVE, Status.PAUSED)
    done = Session.objects.filter(pk=session_id, status__in=live).update(last_heartbeat_at=now, last_activity_at=now)
    if done:
        return
    # Only the refusal path pays for a second query, to name the status.
    raise SessionEnded(Session.objects.only("status").get(pk=session_id).status)


__all__ = [
    "ALLOWED",
    "CheckpointNotFound",
    "IdempotencyConflict",
    "InvalidChange",
    "InvalidTransition",
    "SessionEnded",
    "LifecycleError",
    "VersionMismatch",
    "change_status",
    "check_transition",
    "create_session",
    "create_session_idempotent",
    "delete_session",
    "fork_session",
    "get_checkpoint",
    "heartbeat",
    "merge_patch",
    "restore_checkpoint",
    "update_session",
]
