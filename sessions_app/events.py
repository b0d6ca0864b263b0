"""Session events on the Redis channel ``events:session``.

Every event has one envelope, built here and nowhere else::

    {"event_id", "event_type", "aggregate_type": "session", "aggregate_id",
     "occurred_at", "payload": {...}}

Events leave the process only after the transaction that caused them commits
(``publish_on_commit``): a subscriber never hears of a change that rolled back,
and a subscriber that reads the session on receipt sees the new state.

When Redis is not configured the events are logged instead; when it is down,
the request still succeeds and the failure is logged once (and its recovery
once), not on every request.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

if TYPE_CHECKING:
    from .models import Session

log = logging.getLogger("sessions_app.events")

CREATED = "session.created"
UPDATED = "session.updated"
DELETED = "session.deleted"
RECOVERED = "session.recovered"


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
        self._failing = False
        self._warned_unconfigured = False

    def _get_client(self, url: str) -> redis.Redis:
        with self._lock:
            if self._client is None or self._client_url != url:
                self._client = redis.Redis.from_url(
                    url, socket_connect_timeout=1.0, socket_timeout=1.0, health_check_interval=30
                )
                self._client_url = url
            return self._client

    def publish(self, event: dict) -> bool:
        """Publish one event; answer whether Redis took it. Never raises."""
        url = settings.REDIS_URL
        message = json.dumps(event, separators=(",", ":"), default=str)
        if not url:
            if not self._warned_unconfigured:
                self._warned_unconfigured = True
                log.warning("REDIS_URL is not set: events are logged here and not published")
            log.info("event %s", message)
            return False
        try:
            self._get_client(url).publish(settings.EVENTS_CHANNEL, message)
        except (redis.RedisError, OSError) as exc:
            if not self._failing:
                self._failing = True
                log.warning("Cannot publish events to Redis at %s: %s", _safe_url(url), exc)
            return False
        if self._failing:
            self._failing = False
            log.warning("Redis at %s is reachable again: publishing events", _safe_url(url))
        return True


def _safe_url(url: str) -> str:
    # Never log a password.
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


publisher = Publisher()


def publish_on_commit(event: dict) -> None:
    transaction.on_commit(lambda: publisher.publish(event), robust=True)
