"""Input and error shapes of the liveness and recovery endpoints."""

from __future__ import annotations

from rest_framework import serializers

from .models import Session
from .serializers import ErrorSerializer, StrictCharField, StrictChoiceField, StrictSerializer, StrictUUIDField


class RecoverRequestSerializer(StrictSerializer):
    """Optional filters of POST /sessions/recover: the oldest matching crashed session is handed out."""

    agent_id = StrictUUIDField(required=False, help_text="Only sessions of this agent.")
    session_type = StrictCharField(max_length=100, required=False, help_text="Only sessions of this type.")
    runtime_backend = StrictChoiceField(
        choices=Session.RuntimeBackend.choices, required=False, help_text="Only sessions on this backend."
    )


class RecoveryErrorSerializer(ErrorSerializer):
    current_status = serializers.ChoiceField(choices=Session.Status.choices)
    recovery_attempts = serializers.IntegerField()
    max_recovery_attempts = serializers.IntegerField()


class LivenessErrorSerializer(ErrorSerializer):
    current_status = serializers.ChoiceField(choices=Session.Status.choices)
