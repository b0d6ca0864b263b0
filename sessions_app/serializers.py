"""Input validation and output shape of the API.

Input serializers are strict: a field of the wrong type, a JSON field that is
not an object and a field the API does not know are all refused by name, so a
misspelt ``checkpiont`` can never be silently dropped.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Checkpoint, Session

# --- Strict fields ----------------------------------------------------------


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    default_error_messages = {"invalid": "Must be a UUID string, such as 550e8400-e29b-41d4-a716-446655440000."}

    def to_internal_value(self, data):
        if isinstance(data, uuid.UUID):
            return data
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    def __init__(self, choices, **kwargs):
        super().__init__(choices, **kwargs)
        allowed = ", ".join(str(c) for c in self.choices)
        self.error_messages["invalid_choice"] = f'"{{input}}" is not a valid choice; expected one of: {allowed}.'

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


def storable_json_problem(value) -> str | None:
    """Why PostgreSQL's jsonb would refuse this value, or None (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "Text may not contain the NUL character (\\u0000)."
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "Text may not contain unpaired surrogates."
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "Numbers must be finite (no NaN or Infinity)."
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.JSONField):
    default_error_messages = {"not_object": "Must be a JSON object."}

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            self.fail("not_object")
        problem = storable_json_problem(data)
        if problem:
            raise serializers.ValidationError(problem)
        return dict(data)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, and read-only fields, by name."""

    read_only_names: frozenset[str] = frozenset()

    def to_internal_value(self, data):
        errors: dict[str, list[str]] = {}
        if isinstance(data, Mapping):
            for name in data:
                if name in self.fields:
                    continue
                if name in self.read_only_names:
                    errors[name] = ["This field is read-only."]
                else:
                    errors[name] = ["Unknown field."]
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not errors or not isinstance(exc.detail, Mapping):
                raise
            errors.update(exc.detail)
            raise serializers.ValidationError(errors) from exc
        if errors:
            raise serializers.ValidationError(errors)
        return value


READ_ONLY_SESSION_FIELDS = frozenset(
    {
        "id",
        "created_at",
        "updated_at",
        "version",
        "ended_at",
        "duration_seconds",
        "parent_id",
        "last_heartbeat_at",
        "last_activity_at",
        "recovery_attempts",
        "recovered_at",
        "recoverable",
    }
)

# --- Input ------------------------------------------------------------------


class SessionCreateSerializer(StrictSerializer):
    read_only_names = READ_ONLY_SESSION_FIELDS

    agent_id = StrictUUIDField(help_text="The agent running this session.")
    session_type = StrictCharField(
        max_length=100, help_text='For example "conversation", "task", "development", "batch".'
    )
    status = StrictChoiceField(choices=Session.Status.choices, required=False, default=Session.Status.ACTIVE)
    context = JSONObjectField(required=False, default=dict)
    checkpoint = JSONObjectField(required=False, default=dict)
    runtime_backend = StrictChoiceField(
        choices=Session.RuntimeBackend.choices, required=False, default=Session.RuntimeBackend.UNKNOWN
    )
    runtime_metadata = JSONObjectField(required=False, default=dict)
    crash_reason = StrictCharField(max_length=200, required=False, allow_blank=True)

    def validate(self, attrs):
        if attrs.get("crash_reason") and attrs.get("status") != Session.Status.CRASHED:
            raise serializers.ValidationError({"crash_reason": ["Can only be given with status 'crashed'."]})
        return attrs


class SessionUpdateSerializer(StrictSerializer):
    read_only_names = READ_ONLY_SESSION_FIELDS | {"agent_id"}

    session_type = StrictCharField(max_length=100, required=False)
    status = StrictChoiceField(choices=Session.Status.choices, required=False)
    context = JSONObjectField(required=False)
    checkpoint = JSONObjectField(required=False)
    runtime_backend = StrictChoiceField(choices=Session.RuntimeBackend.choices, required=False)
    runtime_metadata = JSONObjectField(required=False)
    crash_reason = StrictCharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Why the session crashed; only with status 'crashed'.",
    )


class ForkSerializer(StrictSerializer):
    checkpoint = serializers.IntegerField(
        min_value=1, required=False, help_text="Fork from this history entry instead of the current checkpoint."
    )


# --- Output -----------------------------------------------------------------


class SessionSerializer(serializers.ModelSerializer):
    parent_id = serializers.UUIDField(read_only=True, allow_null=True)
    duration_seconds = serializers.SerializerMethodField()
    recoverable = serializers.BooleanField(read_only=True)
    context = JSONObjectField(read_only=True)
    checkpoint = JSONObjectField(read_only=True)
    runtime_metadata = JSONObjectField(read_only=True)

    class Meta:
        model = Session
        fields = [
            "id",
            "agent_id",
            "session_type",
            "status",
            "context",
            "checkpoint",
            "runtime_backend",
            "runtime_metadata",
            "created_at",
            "updated_at",
            "version",
            "ended_at",
            "duration_seconds",
            "parent_id",
            "last_heartbeat_at",
            "last_activity_at",
            "crash_reason",
            "recovery_attempts",
            "recovered_at",
            "recoverable",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.DOUBLE)
    def get_duration_seconds(self, obj: Session) -> float:
        return round(obj.duration.total_seconds(), 3)

    def to_representation(self, obj: Session) -> dict:
        """The same output as the declared fields, built directly: this runs for every session served."""
        return session_representation(obj)


def _iso(value: datetime | None) -> str | None:
    """DRF's ISO 8601 output: UTC written with a Z."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat() if value.tzinfo is not None else value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def session_representation(obj: Session) -> dict:
    return {
        "id": str(obj.id),
        "agent_id": str(obj.agent_id),
        "session_type": obj.session_type,
        "status": obj.status,
        "context": obj.context,
        "checkpoint": obj.checkpoint,
        "runtime_backend": obj.runtime_backend,
        "runtime_metadata": obj.runtime_metadata,
        "created_at": _iso(obj.created_at),
        "updated_at": _iso(obj.updated_at),
        "version": obj.version,
        "ended_at": _iso(obj.ended_at),
        "duration_seconds": round(obj.duration.total_seconds(), 3),
        "parent_id": str(obj.parent_id) if obj.parent_id else None,
        "last_heartbeat_at": _iso(obj.last_heartbeat_at),
        "last_activity_at": _iso(obj.last_activity_at),
        "crash_reason": obj.crash_reason,
        "recovery_attempts": obj.recovery_attempts,
        "recovered_at": _iso(obj.recovered_at),
        "recoverable": obj.recoverable,
    }


class CheckpointSerializer(serializers.ModelSerializer):
    checkpoint = JSONObjectField(read_only=True)

    class Meta:
        model = Checkpoint
        fields = ["number", "checkpoint", "created_at"]
        read_only_fields = fields


# --- Error shapes, for the schema ------------------------------------------


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


class TransitionErrorSerializer(ErrorSerializer):
    current_status = serializers.ChoiceField(choices=Session.Status.choices)
    requested_status = serializers.ChoiceField(choices=Session.Status.choices)
    allowed_transitions = serializers.ListField(child=serializers.ChoiceField(choices=Session.Status.choices))


class PreconditionErrorSerializer(ErrorSerializer):
    current_version = serializers.IntegerField()
