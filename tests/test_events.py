"""Events on events:session, as a real Redis subscriber receives them."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.db import transaction

from sessions_app import lifecycle
from sessions_app.models import Session

from .conftest import AGENT, create

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_publishes_session_created_in_the_specified_shape(api, subscriber):
    body = create(api, session_type="development", runtime_backend="local")
    [event] = subscriber.events(body["id"], count=1)
    assert event["event_type"] == "session.created"
    assert event["aggregate_type"] == "session"
    assert event["aggregate_id"] == body["id"]
    assert event["payload"]["agent_id"] == AGENT
    assert event["payload"]["session_type"] == "development"
    assert event["payload"]["runtime_backend"] == "local"
    uuid.UUID(event["event_id"])
    assert event["occurred_at"].startswith(body["created_at"][:10])


def test_update_names_the_fields_the_request_changed(api, subscriber):
    body = create(api)
    response = api.patch(f"/sessions/{body['id']}", {"status": "paused", "checkpoint": {"step": 1}}, format="json")
    assert response.status_code == 200
    created, updated = subscriber.events(body["id"], count=2)
    assert created["event_type"] == "session.created"
    assert updated["event_type"] == "session.updated"
    assert updated["payload"]["agent_id"] == AGENT
    assert updated["payload"]["status"] == "paused"
    assert sorted(updated["payload"]["updates"]) == ["checkpoint", "status"]
    assert updated["payload"]["previous_status"] == "active"


def test_a_patch_that_changes_nothing_publishes_nothing(api, subscriber):
    body = create(api, context={"a": 1})
    response = api.patch(f"/sessions/{body['id']}", {"context": {"a": 1}, "status": "active"}, format="json")
    assert response.status_code == 200
    assert response.json()["version"] == 1
    events = subscriber.events(body["id"], timeout=1.0)
    assert [e["event_type"] for e in events] == ["session.created"]


def test_a_subscriber_reading_on_receipt_sees_the_new_state(api, subscriber):
    body = create(api)
    api.patch(f"/sessions/{body['id']}", {"context": {"progress": 0.5}}, format="json")
    _, updated = subscriber.events(body["id"], count=2)
    # What a subscriber would do: read the session as soon as it hears of the change.
    assert Session.objects.get(pk=updated["aggregate_id"]).context == {"progress": 0.5}


def test_events_wait_for_the_commit(subscriber):
    session = lifecycle.create_session({"agent_id": AGENT, "session_type": "task"})
    subscriber.events(session.pk, count=1)
    with transaction.atomic():
        lifecycle.update_session(session.pk, {"status": "paused"})
        assert len(subscriber.events(session.pk, timeout=0.5)) == 1, "published before the commit"
    assert [e["event_type"] for e in subscriber.events(session.pk, count=2)] == [
        "session.created",
        "session.updated",
    ]


def test_a_rolled_back_change_publishes_nothing(subscriber):
    session = lifecycle.create_session({"agent_id": AGENT, "session_type": "task"})
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            lifecycle.update_session(session.pk, {"status": "paused"})
            raise RuntimeError("roll back")
    assert Session.objects.get(pk=session.pk).status == "active"
    assert [e["event_type"] for e in subscriber.events(session.pk, timeout=0.8)] == ["session.created"]


def test_delete_publishes_session_deleted(api, subscriber):
    body = create(api)
    api.patch(f"/sessions/{body['id']}", {"status": "paused"}, format="json")
    assert api.delete(f"/sessions/{body['id']}").status_code == 204
    events = subscriber.events(body["id"], count=3)
    assert events[-1]["event_type"] == "session.deleted"
    assert events[-1]["payload"] == {"agent_id": AGENT, "status": "paused"}


def test_requests_succeed_when_redis_is_down_and_the_failure_is_logged_once(api, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:6399/0"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="sessions_app.events"):
        body = create(api)
        for n in range(3):
            response = api.patch(f"/sessions/{body['id']}", {"context": {"n": n}}, format="json")
            assert response.status_code == 200
    assert Session.objects.get(pk=body["id"]).context == {"n": 2}
    failures = [r for r in caplog.records if "Cannot publish" in r.getMessage()]
    assert len(failures) == 1
    assert "6399" in failures[0].getMessage()


def test_without_redis_url_events_are_logged_not_published(api, settings, caplog, subscriber):
    settings.REDIS_URL = ""
    with caplog.at_level(logging.INFO, logger="sessions_app.events"):
        body = create(api)
    assert any(body["id"] in r.getMessage() and "session.created" in r.getMessage() for r in caplog.records)
    assert subscriber.events(body["id"], timeout=0.5) == []
