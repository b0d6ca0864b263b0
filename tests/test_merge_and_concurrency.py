"""JSON Merge Patch (RFC 7396) and concurrent writers on real PostgreSQL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessions_app.lifecycle import merge_patch
from sessions_app.models import Session

from .conftest import AGENT, create, run_together

MERGE = "application/merge-patch+json"

# RFC 7396, Appendix A: original, patch, result.
RFC_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_EXAMPLES)
def test_merge_patch_follows_rfc_7396(original, patch, result):
    assert merge_patch(original, patch) == result


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_value = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)
no_null_value = st.recursive(
    st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)
json_object = st.dictionaries(st.text(max_size=3), json_value, max_size=4)


def diff(source: dict, target: dict) -> dict:
    """The merge patch that turns source into target (target holds no nulls)."""
    patch: dict = {key: None for key in source if key not in target}
    for key, value in target.items():
        if isinstance(value, dict) and isinstance(source.get(key), dict):
            inner = diff(source[key], value)
            if inner:
                patch[key] = inner
        elif source.get(key, object()) != value or key not in source:
            patch[key] = value
    return patch


@given(json_object, json_object)
def test_applying_a_merge_patch_twice_changes_nothing_more(target, patch):
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@given(json_object, st.dictionaries(st.text(max_size=3), no_null_value, max_size=4))
def test_the_diff_of_two_documents_patches_one_into_the_other(source, target):
    assert merge_patch(source, diff(source, target)) == target


@pytest.mark.django_db
def test_merge_patch_through_the_api(api):
    session = create(api, context={"a": 1, "nested": {"x": 1, "y": 2}, "gone": True}, checkpoint={"step": 1})
    response = api.patch(
        f"/sessions/{session['id']}",
        b'{"context": {"b": 2, "nested": {"y": null, "z": 3}, "gone": null}, "status": "paused"}',
        content_type=MERGE,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["context"] == {"a": 1, "b": 2, "nested": {"x": 1, "z": 3}}
    assert body["checkpoint"] == {"step": 1}
    assert body["status"] == "paused"


@pytest.mark.django_db
def test_application_json_still_replaces(api):
    session = create(api, context={"a": 1})
    response = api.patch(f"/sessions/{session['id']}", {"context": {"b": 2}}, format="json")
    assert response.json()["context"] == {"b": 2}


# --- Concurrency with real threads --------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_merges_of_different_keys_all_survive(api):
    session = create(api, context={"base": True})
    url = f"/sessions/{session['id']}"

    def merge_one_key(i, client):
        return client.patch(url, f'{{"context": {{"k{i}": {i}}}}}'.encode(), content_type=MERGE).status_code

    assert run_together(12, merge_one_key) == [200] * 12
    stored = Session.objects.get(pk=session["id"])
    assert stored.context == {"base": True, **{f"k{i}": i for i in range(12)}}
    assert stored.version == 13


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_different_fields_never_undo_each_other(api):
    session = create(api)
    url = f"/sessions/{session['id']}"
    fields = ["context", "checkpoint", "runtime_metadata", "session_type"]

    def write(i, client):
        field = fields[i % 4]
        value = f"type-{i}" if field == "session_type" else {"writer": i}
        return client.patch(url, {field: value}, format="json").status_code

    for _ in range(5):
        assert run_together(4, write) == [200] * 4
        stored = Session.objects.get(pk=session["id"])
        assert stored.context == {"writer": 0}
        assert stored.checkpoint == {"writer": 1}
        assert stored.runtime_metadata == {"writer": 2}
        assert stored.session_type == "type-3"
        Session.objects.filter(pk=session["id"]).update(
            context={}, checkpoint={}, runtime_metadata={}, session_type="task"
        )


@pytest.mark.django_db(transaction=True)
def test_only_one_of_two_writers_with_the_same_if_match_wins(api):
    session = create(api)
    url = f"/sessions/{session['id']}"

    def write(i, client):
        return client.patch(url, {"checkpoint": {"by": i}}, format="json", HTTP_IF_MATCH='"1"').status_code

    codes = run_together(8, write)
    assert sorted(codes) == [200] + [412] * 7
    assert Session.objects.get(pk=session["id"]).version == 2


@pytest.mark.django_db(transaction=True)
def test_twenty_identical_idempotent_creates_make_one_session(subscriber):
    body = {"agent_id": AGENT, "session_type": "task", "context": {"n": 1}}

    def post(i, client):
        response = client.post("/sessions/", body, format="json", HTTP_IDEMPOTENCY_KEY="job-42")
        return response.status_code, response.json()["id"]

    results = run_together(20, post)
    assert sorted(code for code, _ in results) == [200] * 19 + [201]
    assert len({session_id for _, session_id in results}) == 1
    assert Session.objects.count() == 1
    session_id = results[0][1]
    events = subscriber.events(session_id, count=1, timeout=1.5)
    assert [e["event_type"] for e in events] == ["session.created"]
