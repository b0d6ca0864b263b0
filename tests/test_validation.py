"""Bad input: a 400 that names each bad field, 404 for unknown ids, never a 500."""

from __future__ import annotations

import pytest

from sessions_app.models import Session

from .conftest import AGENT, create

pytestmark = pytest.mark.django_db


def post(api, body, **kwargs):
    return api.post("/sessions/", body, format="json", **kwargs)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"session_type": "task"}, "agent_id"),
        ({"agent_id": AGENT}, "session_type"),
        ({"agent_id": "not-a-uuid", "session_type": "task"}, "agent_id"),
        ({"agent_id": 12345, "session_type": "task"}, "agent_id"),
        ({"agent_id": AGENT, "session_type": 7}, "session_type"),
        ({"agent_id": AGENT, "session_type": ["task"]}, "session_type"),
        ({"agent_id": AGENT, "session_type": "task", "status": "running"}, "status"),
        ({"agent_id": AGENT, "session_type": "task", "status": 1}, "status"),
        ({"agent_id": AGENT, "session_type": "task", "runtime_backend": "docker"}, "runtime_backend"),
        ({"agent_id": AGENT, "session_type": "task", "context": ["a"]}, "context"),
        ({"agent_id": AGENT, "session_type": "task", "context": "text"}, "context"),
        ({"agent_id": AGENT, "session_type": "task", "context": None}, "context"),
        ({"agent_id": AGENT, "session_type": "task", "checkpoint": 5}, "checkpoint"),
        ({"agent_id": AGENT, "session_type": "task", "runtime_metadata": [1]}, "runtime_metadata"),
        ({"agent_id": AGENT, "session_type": "task", "checkpiont": {"step": 1}}, "checkpiont"),
        ({"agent_id": AGENT, "session_type": "task", "id": AGENT}, "id"),
        ({"agent_id": AGENT, "session_type": "task", "version": 3}, "version"),
    ],
)
def test_create_refuses_bad_fields_by_name(api, body, field):
    response = post(api, body)
    assert response.status_code == 400
    assert field in response.json()
    assert Session.objects.count() == 0


def test_every_bad_field_is_named_at_once(api):
    response = post(api, {"agent_id": "x", "session_type": 1, "context": [], "colour": "red"})
    assert response.status_code == 400
    assert set(response.json()) == {"agent_id", "session_type", "context", "colour"}


@pytest.mark.parametrize("raw", ['{"agent_id": ', "[1, 2]", '"text"', "null", "{'single': 'quotes'}"])
def test_a_malformed_body_is_refused(api, raw):
    response = api.post("/sessions/", raw, content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "finished"}, "status"),
        ({"context": [1]}, "context"),
        ({"checkpoint": "step 5"}, "checkpoint"),
        ({"runtime_metadata": None}, "runtime_metadata"),
        ({"runtime_backend": "ec2"}, "runtime_backend"),
        ({"checkpiont": {"step": 5}}, "checkpiont"),
        ({"agent_id": AGENT}, "agent_id"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        ({"session_type": None}, "session_type"),
    ],
)
def test_patch_refuses_bad_fields_by_name_and_changes_nothing(api, body, field):
    session = create(api, context={"keep": True})
    response = api.patch(f"/sessions/{session['id']}", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    stored = Session.objects.get(pk=session["id"])
    assert stored.context == {"keep": True}
    assert stored.version == 1


def test_a_misspelt_field_is_refused_even_beside_a_good_one(api):
    session = create(api)
    response = api.patch(f"/sessions/{session['id']}", {"status": "paused", "checkpiont": {}}, format="json")
    assert response.status_code == 400
    assert response.json() == {"checkpiont": ["Unknown field."]}
    assert Session.objects.get(pk=session["id"]).status == "active"


def test_a_form_body_that_is_not_json_is_read_as_a_form(api):
    session = create(api)
    response = api.patch(
        f"/sessions/{session['id']}", "status=paused", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "paused"


def test_a_body_without_any_content_type_is_read_as_json(api):
    session = create(api)
    response = api.generic("PATCH", f"/sessions/{session['id']}", b'{"status": "paused"}', content_type="")
    assert response.status_code == 200
    assert response.json()["status"] == "paused"


def test_an_unsupported_content_type_is_a_415(api):
    session = create(api)
    response = api.generic("PATCH", f"/sessions/{session['id']}", b"status: paused", content_type="text/yaml")
    assert response.status_code == 415
    assert Session.objects.get(pk=session["id"]).status == "active"


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
@pytest.mark.parametrize(
    "session_id", ["660e8400-e29b-41d4-a716-446655440001", "not-a-uuid", "660e8400", "%20", "1234"]
)
def test_an_unknown_or_malformed_id_is_a_json_404(api, method, session_id):
    response = getattr(api, method)(f"/sessions/{session_id}", {"status": "paused"}, format="json")
    assert response.status_code == 404
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("agent_id=nope", "agent_id"),
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("status=running", "status"),
        ("runtime_backend=docker", "runtime_backend"),
        ("created_after=yesterday", "created_after"),
        ("updated_before=2026-13-45", "updated_before"),
        ("ordering=agent_id", "ordering"),
        ("cursor=garbage", "cursor"),
        ("parent_id=1", "parent_id"),
    ],
)
def test_a_bad_list_query_is_a_400_naming_the_parameter(api, query, param):
    response = api.get(f"/sessions/?{query}")
    assert response.status_code == 400
    assert param in response.json()


def test_put_is_not_allowed(api):
    session = create(api)
    response = api.put(f"/sessions/{session['id']}", {"status": "paused"}, format="json")
    assert response.status_code == 405
    assert response.json()["detail"]


def test_unknown_paths_answer_json_404(api):
    response = api.get("/nowhere/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("created_after=2026-01-01T00:00:00%2B16:00", 200),  # a legal offset PostgreSQL itself refuses
        ("created_after=0001-01-01T00:00:00%2B01:00", 400),  # before year 1 in UTC
        ("updated_before=9999-12-31T23:59:59-05:00", 400),  # after year 9999 in UTC
    ],
)
def test_time_filters_at_the_edges_never_answer_500(api, query, code):
    for path in ("/sessions/", "/sessions/metrics/"):
        assert api.get(f"{path}?{query}").status_code == code


@pytest.mark.parametrize(
    "raw",
    [
        b'{"agent_id": "550e8400-e29b-41d4-a716-446655440000", "session_type": "t", "context": {"a\\u0000b": 1}}',
        b'{"agent_id": "550e8400-e29b-41d4-a716-446655440000", "session_type": "t", "context": {"a": "\\ud800"}}',
        b'{"agent_id": "550e8400-e29b-41d4-a716-446655440000", "session_type": "t", "checkpoint": {"a": 1e999}}',
        b'{"agent_id": "550e8400-e29b-41d4-a716-446655440000", "session_type": "t", "runtime_metadata": {"a": NaN}}',
    ],
)
@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_json_the_database_cannot_store_is_a_400_not_a_500(api, raw, content_type):
    response = api.generic("POST", "/sessions/", raw, content_type=content_type)
    assert response.status_code == 400
    assert Session.objects.count() == 0


def test_a_body_nested_too_deeply_is_a_400(api):
    session = create(api)
    deep = b'{"context": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    response = api.generic("PATCH", f"/sessions/{session['id']}", deep, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/sessions/", "/sessions/metrics/", "/events/"])
def test_a_misspelt_query_parameter_is_a_400_not_ignored(api, path):
    response = api.get(f"{path}?stauts=active")
    assert response.status_code == 400
    assert response.json() == {"stauts": ["Unknown query parameter."]}
