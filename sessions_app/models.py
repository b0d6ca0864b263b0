"""The session: the system of record for one agent's execution.

Lifecycle rules (which status moves are allowed, what a move records) live in
``sessions_app.lifecycle``; the model only declares the data and its indexes.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Session(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        COMPLETED = "completed"
        CRASHED = "crashed"

    class RuntimeBackend(models.TextChoices):
        LOCAL = "local"
        KUBERNETES = "kubernetes"
        UNKNOWN = "unknown"

    # Statuses that end a run: entering one records ended_at.
    ENDED = frozenset({Status.COMPLETED, Status.CRASHED})

    # The fields a client may write (POST and PATCH); the order is the order
    # of `updates` in session.updated events.
    WRITABLE_FIELDS = (
        "agent_id",
        "session_type",
        "status",
        "context",
        "checkpoint",
        "runtime_backend",
        "runtime_metadata",
        "crash_reason",
    )
    JSON_FIELDS = ("context", "checkpoint", "runtime_metadata")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent_id = models.UUIDField()
    session_type = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    context = models.JSONField(default=dict, blank=True)
    checkpoint = models.JSONField(default=dict, blank=True)
    runtime_backend = models.CharField(max_length=16, choices=RuntimeBackend.choices, default=RuntimeBackend.UNKNOWN)
    runtime_metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    # Optimistic concurrency: grows by one with every change; served as ETag.
    version = models.PositiveIntegerField(default=1)
    ended_at = models.DateTimeField(null=True, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks")
    # Liveness: heartbeats and every change move last_activity_at.
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(default=timezone.now)
    crash_reason = models.CharField(max_length=200, blank=True, default="")
    recovery_attempts = models.PositiveIntegerField(default=0)
    recovered_at = models.DateTimeField(null=True, blank=True)
    # Number of the newest checkpoint history entry (the row is locked while it grows).
    checkpoint_seq = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        get_latest_by = "created_at"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["active", "paused", "completed", "crashed"]), name="session_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(runtime_backend__in=["local", "kubernetes", "unknown"]),
                name="session_runtime_backend_valid",
            ),
        ]
        indexes = [
            # GET /sessions/ newest first, and created_after/created_before.
            models.Index(fields=["-created_at", "-id"], name="session_created"),
            # GET /sessions/?agent_id=... newest first (the most common query).
            models.Index(fields=["agent_id", "-created_at"], name="session_agent_created"),
            models.Index(fields=["agent_id", "-updated_at"], name="session_agent_updated"),
            # ?status=..., ?session_type=..., ?runtime_backend=... newest first.
            models.Index(fields=["status", "-created_at"], name="session_status_created"),
            models.Index(fields=["session_type", "-created_at"], name="session_type_created"),
            models.Index(fields=["runtime_backend", "-created_at"], name="session_backend_created"),
            # ordering=updated_at and updated_after/updated_before.
            models.Index(fields=["-updated_at", "-id"], name="session_updated"),
            # detect_crashed_sessions: active sessions by last activity.
            models.Index(fields=["last_activity_at"], condition=Q(status="active"), name="session_active_activity"),
            # Recovery queue: the oldest crashed session first.
            models.Index(
                fields=["ended_at", "created_at"], condition=Q(status="crashed"), name="session_crashed_queue"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session_type} session {self.id} ({self.status})"

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @property
    def duration(self) -> timedelta:
        end = self.ended_at or timezone.now()
        return end - self.created_at

    @property
    def recoverable(self) -> bool:
        return self.recovery_attempts < settings.MAX_RECOVERY_ATTEMPTS


class Checkpoint(models.Model):
    """One numbered entry of a session's checkpoint history (newest N kept)."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="checkpoints")
    number = models.PositiveIntegerField()
    checkpoint = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["session", "number"], name="checkpoint_session_number_unique"),
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.number} of {self.session_id}"


class IdempotencyKey(models.Model):
    """POST /sessions/ with an Idempotency-Key header: one session per key and agent."""

    agent_id = models.UUIDField()
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent_id", "key"], name="idempotency_agent_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.key} for agent {self.agent_id}"


class Event(models.Model):
    """The event store and transactional outbox.

    Each event is written in the same transaction as the change it describes,
    so a committed change always has its event and a rolled-back one never
    does. ``sequence`` is global and increasing, and on PostgreSQL events are
    numbered in commit order (see ``events.record``), so a consumer that reads
    ``sequence > N`` never skips one. ``published_at`` stays empty until Redis
    took the event; the relay delivers what is left.
    """

    sequence = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    event_type = models.CharField(max_length=64)
    aggregate_type = models.CharField(max_length=32, default="session")
    aggregate_id = models.UUIDField()
    agent_id = models.UUIDField(null=True, blank=True)
    payload = models.JSONField(default=dict)
    occurred_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["sequence"]
        indexes = [
            # GET /sessions/{id}/events/ and /events/?aggregate_id=...: one session's events in order.
            models.Index(fields=["aggregate_id", "sequence"], name="event_aggregate_seq"),
            # /events/?agent_id=... and ?event_type=...
            models.Index(fields=["agent_id", "sequence"], name="event_agent_seq"),
            models.Index(fields=["event_type", "sequence"], name="event_type_seq"),
            # The relay's queue: tiny, as nearly all events are published at once.
            models.Index(fields=["sequence"], condition=Q(published_at__isnull=True), name="event_unpublished"),
            # After each commit: does this session have older unpublished events (its backlog)?
            models.Index(
                fields=["aggregate_id", "sequence"],
                condition=Q(published_at__isnull=True),
                name="event_unpublished_session",
            ),
            # Retention: published events by age.
            models.Index(fields=["occurred_at"], condition=Q(published_at__isnull=False), name="event_published_age"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.event_type} {self.aggregate_id}"

    def message(self) -> dict:
        """The message published on events:session: the envelope plus its sequence."""
        return {
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": str(self.aggregate_id),
            "occurred_at": self.occurred_at.isoformat(),
            "sequence": self.sequence,
            "payload": self.payload,
        }
