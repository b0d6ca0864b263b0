"""Checkpoint history, restore, fork and idempotent creates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions_app.models import Checkpoint, IdempotencyKey, Session

from .conftest import AGENT, create

pytestmark = pytest.mark.django_db


def save_checkpoints(api, session_id: str, steps) -> None:
    for step in steps:
        response = api.patch(f"/sessions/{session_id}", {"checkpoint": {"step": step}}, format="json")
        assert response.status_code == 200


def test_every_checkpoint_change_is_a_numbered_history_entry(api):
    session = create(api, checkpoint={"step": 0})
    save_checkpoints(api, session["id"], [1, 2])
    api.patch(f"/sessions/{session['id']}", {"checkpoint": {"step": 2}}, format="json")  # no change
    api.patch(f"/sessions/{session['id']}", {"context": {"x": 1}}, format="json")  # not a checkpoint
    response = api.get(f"/sessions/{session['id']}/checkpoints/")
    assert response.status_code == 200
    history = response.json()
    assert [e["number"] for e in history] == [3, 2, 1]
    assert [e["checkpoint"] for e in history] == [{"step": 2}, {"step": 1}, {"step": 0}]
    assert all(e["created_at"] for e in history)


def test_one_history_entry(api):
    session = create(api)
    save_checkpoints(api, session["id"], [1, 2])
    response = api.get(f"/sessions/{session['id']}/checkpoints/1")
    assert response.status_code == 200
    assert response.json()["checkpoint"] == {"step": 1}
    assert api.get(f"/sessions/{session['id']}/checkpoints/9").status_code == 404
    assert api.get("/sessions/660e8400-e29b-41d4-a716-446655440001/checkpoints/1").status_code == 404
    assert api.get("/sessions/660e8400-e29b-41d4-a716-446655440001/checkpoints/").status_code == 404


def test_restore_makes_an_old_checkpoint_current_as_a_new_entry(api):
    session = create(api)
    save_checkpoints(api, session["id"], [1, 2, 3])
    response = api.post(f"/sessions/{session['id']}/checkpoints/1/restore")
    assert response.status_code == 200
    assert response.json()["checkpoint"] == {"step": 1}
    assert response.json()["version"] == 5
    history = api.get(f"/sessions/{session['id']}/checkpoints").json()
    assert [(e["number"], e["checkpoint"]["step"]) for e in history][:2] == [(4, 1), (3, 3)]
    assert api.post(f"/sessions/{session['id']}/checkpoints/42/restore").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_restore_publishes_session_updated(api, subscriber):
    session = create(api)
    save_checkpoints(api, session["id"], [1, 2])
    api.post(f"/sessions/{session['id']}/checkpoints/1/restore")
    events = subscriber.events(session["id"], count=4)
    assert events[-1]["event_type"] == "session.updated"
    assert events[-1]["payload"]["updates"] == ["checkpoint"]


def test_history_keeps_only_the_newest_entries(api, settings):
    settings.CHECKPOINT_HISTORY_LIMIT = 3
    session = create(api)
    save_checkpoints(api, session["id"], range(1, 8))
    assert list(Checkpoint.objects.filter(session_id=session["id"]).values_list("number", flat=True)) == [7, 6, 5]


def test_fork_copies_context_and_checkpoint_into_a_new_active_session(api):
    source = create(api, context={"task": "x"}, checkpoint={"step": 1}, runtime_backend="local")
    save_checkpoints(api, source["id"], [2])
    api.patch(f"/sessions/{source['id']}", {"status": "crashed"}, format="json")
    response = api.post(f"/sessions/{source['id']}/fork")
    assert response.status_code == 201
    fork = response.json()
    assert fork["id"] != source["id"]
    assert fork["parent_id"] == source["id"]
    assert fork["agent_id"] == AGENT
    assert fork["status"] == "active"
    assert fork["context"] == {"task": "x"}
    assert fork["checkpoint"] == {"step": 2}
    assert Session.objects.get(pk=source["id"]).status == "crashed"


def test_fork_from_an_older_checkpoint(api):
    source = create(api, checkpoint={"step": 1})
    save_checkpoints(api, source["id"], [2, 3])
    fork = api.post(f"/sessions/{source['id']}/fork", {"checkpoint": 2}, format="json").json()
    assert fork["checkpoint"] == {"step": 2}
    assert api.post(f"/sessions/{source['id']}/fork", {"checkpoint": 99}, format="json").status_code == 404
    bad = api.post(f"/sessions/{source['id']}/fork", {"checkpoint": "two"}, format="json")
    assert bad.status_code == 400 and "checkpoint" in bad.json()
    unknown = api.post(f"/sessions/{source['id']}/fork", {"context": {}}, format="json")
    assert unknown.status_code == 400 and "context" in unknown.json()


@pytest.mark.django_db(transaction=True)
def test_fork_publishes_session_created_with_its_parent(api, subscriber):
    source = create(api)
    fork = api.post(f"/sessions/{source['id']}/fork").json()
    [event] = subscriber.events(fork["id"], count=1)
    assert event["event_type"] == "session.created"
    assert event["payload"]["parent_id"] == source["id"]


def test_an_idempotent_retry_answers_the_first_session(api):
    body = {"agent_id": AGENT, "session_type": "task"}
    first = api.post("/sessions/", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = api.post("/sessions/", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other_agent = api.post(
        "/sessions/",
        {**body, "agent_id": "11111111-1111-1111-1111-111111111111"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    assert other_agent.status_code == 201
    assert Session.objects.count() == 2


def test_the_same_idempotency_key_with_another_body_is_a_409(api):
    api.post("/sessions/", {"agent_id": AGENT, "session_type": "task"}, format="json", HTTP_IDEMPOTENCY_KEY="k2")
    response = api.post(
        "/sessions/", {"agent_id": AGENT, "session_type": "batch"}, format="json", HTTP_IDEMPOTENCY_KEY="k2"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"
    assert Session.objects.count() == 1


def test_an_idempotency_key_is_forgotten_after_its_time_to_live(api, settings):
    settings.IDEMPOTENCY_KEY_TTL_HOURS = 24
    body = {"agent_id": AGENT, "session_type": "task"}
    first = api.post("/sessions/", body, format="json", HTTP_IDEMPOTENCY_KEY="k3").json()
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    again = api.post("/sessions/", body, format="json", HTTP_IDEMPOTENCY_KEY="k3")
    assert again.status_code == 201
    assert again.json()["id"] != first["id"]
    retry = api.post("/sessions/", body, format="json", HTTP_IDEMPOTENCY_KEY="k3")
    assert retry.status_code == 200 and retry.json()["id"] == again.json()["id"]
