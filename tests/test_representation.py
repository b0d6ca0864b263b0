"""The hand-built session representation says exactly what the declared serializer fields say."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from sessions_app import lifecycle
from sessions_app.serializers import SessionSerializer

from .conftest import AGENT

pytestmark = pytest.mark.django_db


def test_the_fast_representation_matches_the_declared_fields():
    parent = lifecycle.create_session({"agent_id": AGENT, "session_type": "task", "checkpoint": {"s": 1}})
    session = lifecycle.fork_session(parent.pk)
    lifecycle.update_session(session.pk, {"status": "crashed", "crash_reason": "OOM"})
    session.refresh_from_db()
    serializer = SessionSerializer(session)
    declared = serializers.ModelSerializer.to_representation(serializer, session)
    fast = serializer.data
    declared.pop("duration_seconds"), fast.pop("duration_seconds")
    assert dict(fast) == dict(declared)
    assert list(fast) == list(declared)
