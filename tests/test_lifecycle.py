"""Status rules, ended_at and duration, delete, ETags: through the API and the domain functions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from sessions_app import lifecycle
from sessions_app.models import Checkpoint, Session

from .conftest import create

pytestmark = pytest.mark.django_db

STATUSES = [s.value for s in Session.Status]
EXPECTED = {
    ("active", "paused"), ("active", "completed"), ("active", "crashed"),
    ("paused", "active"), ("paused", "completed"), ("paused", "crashed"),
    ("crashed", "active"), ("crashed", "completed"),
}  # fmt: skip


@given(st.sampled_from(STATUSES), st.sampled_from(STATUSES))
def test_the_transition_table_is_exactly_the_specified_one(current, requested):
    if current == requested:
        assert lifecycle.check_transition(current, requested) is False
    elif (current, requested) in EXPECTED:
        assert lifecycle.check_transition(current, requested) is True
    else:
        with pytest.raises(lifecycle.InvalidTransition) as info:
            lifecycle.check_transition(current, requested)
        assert info.value.allowed == sorted(t for c, t in EXPECTED if c == current)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=6))
def test_any_sequence_of_moves_through_the_api_follows_the_rules(moves):
    api = APIClient()
    session = create(api)
    status = "active"
    version = 1
    for requested in moves:
        response = api.patch(f"/sessions/{session['id']}", {"status": requested}, format="json")
        if requested == status:
            assert response.status_code == 200
        elif (status, requested) in EXPECTED:
            assert response.status_code == 200
            status = requested
            version += 1
        else:
            assert response.status_code == 409
            body = response.json()
            assert body["current_status"] == status
            assert body["requested_status"] == requested
        stored = Session.objects.get(pk=session["id"])
        assert (stored.status, stored.version) == (status, version)
        assert (stored.ended_at is not None) == (status in ("completed", "crashed"))


def test_a_completed_session_cannot_be_resumed(api):
    session = create(api)
    api.patch(f"/sessions/{session['id']}", {"status": "completed"}, format="json")
    response = api.patch(f"/sessions/{session['id']}", {"status": "active"}, format="json")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "Cannot move a session from 'completed' to 'active'; allowed: none: it is final.",
        "code": "invalid_transition",
        "current_status": "completed",
        "requested_status": "active",
        "allowed_transitions": [],
    }


def test_a_refused_move_changes_nothing_else_in_the_request(api):
    session = create(api, context={"a": 1})
    api.patch(f"/sessions/{session['id']}", {"status": "completed"}, format="json")
    response = api.patch(f"/sessions/{session['id']}", {"status": "paused", "context": {"b": 2}}, format="json")
    assert response.status_code == 409
    assert Session.objects.get(pk=session["id"]).context == {"a": 1}


def test_setting_the_current_status_again_is_a_200_that_changes_nothing(api):
    session = create(api)
    response = api.patch(f"/sessions/{session['id']}", {"status": "active"}, format="json")
    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert response.json()["updated_at"] == session["updated_at"]


def test_ending_records_ended_at_and_resuming_a_crash_clears_it(api):
    session = create(api)
    crashed = api.patch(
        f"/sessions/{session['id']}", {"status": "crashed", "crash_reason": "OOM killed"}, format="json"
    ).json()
    assert crashed["ended_at"] is not None
    assert crashed["crash_reason"] == "OOM killed"
    resumed = api.patch(f"/sessions/{session['id']}", {"status": "active"}, format="json").json()
    assert resumed["ended_at"] is None
    assert resumed["crash_reason"] == ""


def test_crash_reason_needs_the_crashed_status(api):
    session = create(api)
    response = api.patch(f"/sessions/{session['id']}", {"crash_reason": "why"}, format="json")
    assert response.status_code == 400
    assert "crash_reason" in response.json()


def test_duration_runs_until_the_session_ends(api):
    session = create(api)
    Session.objects.filter(pk=session["id"]).update(
        created_at=Session.objects.get(pk=session["id"]).created_at - timedelta(minutes=10)
    )
    running = api.get(f"/sessions/{session['id']}").json()
    assert 600 <= running["duration_seconds"] < 610
    ended = api.patch(f"/sessions/{session['id']}", {"status": "completed"}, format="json").json()
    stored = Session.objects.get(pk=session["id"])
    assert ended["duration_seconds"] == round((stored.ended_at - stored.created_at).total_seconds(), 3)
    later = api.get(f"/sessions/{session['id']}").json()
    assert later["duration_seconds"] == ended["duration_seconds"]


def test_delete_removes_the_session_and_its_history(api):
    session = create(api, checkpoint={"step": 1})
    api.patch(f"/sessions/{session['id']}", {"checkpoint": {"step": 2}}, format="json")
    assert api.delete(f"/sessions/{session['id']}").status_code == 204
    assert not Session.objects.filter(pk=session["id"]).exists()
    assert not Checkpoint.objects.filter(session_id=session["id"]).exists()
    assert api.delete(f"/sessions/{session['id']}").status_code == 404
    assert api.get(f"/sessions/{session['id']}").status_code == 404


def test_version_and_etag_grow_with_every_change(api):
    session = create(api)
    response = api.get(f"/sessions/{session['id']}")
    assert response["ETag"] == '"1"'
    response = api.patch(f"/sessions/{session['id']}", {"context": {"x": 1}}, format="json")
    assert response["ETag"] == '"2"'
    assert response.json()["version"] == 2


def test_if_match_guards_patch_and_delete(api):
    session = create(api)
    url = f"/sessions/{session['id']}"
    api.patch(url, {"context": {"x": 1}}, format="json")
    stale = api.patch(url, {"checkpoint": {"step": 9}}, format="json", HTTP_IF_MATCH='"1"')
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 2
    assert Session.objects.get(pk=session["id"]).checkpoint == {}
    fresh = api.patch(url, {"checkpoint": {"step": 9}}, format="json", HTTP_IF_MATCH='"2"')
    assert fresh.status_code == 200 and fresh["ETag"] == '"3"'
    assert api.delete(url, HTTP_IF_MATCH='"2"').status_code == 412
    assert Session.objects.filter(pk=session["id"]).exists()
    assert api.delete(url, HTTP_IF_MATCH='"3"').status_code == 204


def test_if_none_match_answers_304_while_unchanged(api):
    session = create(api)
    url = f"/sessions/{session['id']}"
    assert api.get(url, HTTP_IF_NONE_MATCH='"1"').status_code == 304
    api.patch(url, {"context": {"x": 1}}, format="json")
    assert api.get(url, HTTP_IF_NONE_MATCH='"1"').status_code == 200


def test_a_session_can_be_created_in_any_status(api):
    session = create(api, status="completed")
    assert session["status"] == "completed" and session["ended_at"] is not None
