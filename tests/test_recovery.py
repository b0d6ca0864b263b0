"""Recovery: crashed sessions handed back to callers, one caller each, a bounded number of times."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from sessions_app import recovery
from sessions_app.filters import SessionFilterSet
from sessions_app.models import Session

from .conftest import create, new_agent, run_together

RESUME = {"step": 5, "state": {"files": ["a.ts"]}, "resume_prompt": "Continue from step 5"}


def crashed(api, *, crashed_ago: timedelta = timedelta(minutes=10), **fields) -> dict:
    """A session that crashed ``crashed_ago`` (through the API, then aged)."""
    fields.setdefault("agent_id", new_agent())
    body = create(api, **fields)
    response = api.patch(f"/sessions/{body['id']}", {"status": "crashed", "crash_reason": "lost pod"}, format="json")
    assert response.status_code == 200, response.content
    now = timezone.now()
    Session.objects.filter(pk=body["id"]).update(ended_at=now - crashed_ago, created_at=now - crashed_ago * 2)
    return response.json()


def exhaust(session_id) -> None:
    Session.objects.filter(pk=session_id).update(recovery_attempts=3)


# --- POST /sessions/recover -----------------------------------------------------


@pytest.mark.django_db
def test_recover_hands_out_the_oldest_crashed_session_as_active(api):
    crashed(api, crashed_ago=timedelta(minutes=5))
    oldest = crashed(api, crashed_ago=timedelta(hours=2), checkpoint=RESUME)
    crashed(api, crashed_ago=timedelta(hours=1))
    before = timezone.now()

    response = api.post("/sessions/recover", {}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == oldest["id"]
    assert body["status"] == "active"
    assert body["recovery_attempts"] == 1
    assert body["recoverable"] is True
    assert body["ended_at"] is None
    assert body["checkpoint"]["resume_prompt"] == "Continue from step 5"
    assert body["checkpoint"] == RESUME
    assert response["ETag"] == f'"{body["version"]}"'
    stored = Session.objects.get(pk=oldest["id"])
    assert stored.recovered_at >= before
    assert stored.status == "active"
    assert stored.version == oldest["version"] + 1


@pytest.mark.django_db
def test_recover_answers_204_when_nothing_is_crashed(api):
    create(api)
    create(api, status="completed")
    response = api.post("/sessions/recover")
    assert response.status_code == 204
    assert response.content == b""


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/sessions/recover", "/sessions/recover/"])
def test_recover_answers_with_and_without_a_trailing_slash(api, path):
    session = crashed(api)
    response = api.post(path, {"agent_id": session["agent_id"]}, format="json")
    assert response.status_code == 200
    assert response.json()["id"] == session["id"]


@pytest.mark.django_db
def test_recover_hands_out_only_sessions_matching_its_filters(api):
    agent = new_agent()
    other_agent = crashed(api, crashed_ago=timedelta(hours=5), session_type="task", runtime_backend="kubernetes")
    other_type = crashed(
        api, crashed_ago=timedelta(hours=4), agent_id=agent, session_type="batch", runtime_backend="kubernetes"
    )
    other_backend = crashed(
        api, crashed_ago=timedelta(hours=3), agent_id=agent, session_type="task", runtime_backend="local"
    )
    wanted = crashed(
        api, crashed_ago=timedelta(hours=1), agent_id=agent, session_type="task", runtime_backend="kubernetes"
    )
    filters = {"agent_id": agent, "session_type": "task", "runtime_backend": "kubernetes"}

    response = api.post("/sessions/recover", filters, format="json")

    assert response.status_code == 200
    assert response.json()["id"] == wanted["id"]
    assert api.post("/sessions/recover", filters, format="json").status_code == 204
    still_crashed = set(Session.objects.filter(status="crashed").values_list("id", flat=True))
    assert {str(pk) for pk in still_crashed} >= {other_agent["id"], other_type["id"], other_backend["id"]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"agent": "x"}, {"agent": ["Unknown field."]}),
        (
            {"agent_id": "not-a-uuid"},
            {"agent_id": ["Must be a UUID string, such as 550e8400-e29b-41d4-a716-446655440000."]},
        ),
        ({"agent_id": 7}, {"agent_id": ["Must be a UUID string, such as 550e8400-e29b-41d4-a716-446655440000."]}),
        ({"session_type": ["task"]}, {"session_type": ["Must be a string."]}),
        (
            {"runtime_backend": "docker"},
            {"runtime_backend": ['"docker" is not a valid choice; expected one of: local, kubernetes, unknown.']},
        ),
        ({"status": "crashed"}, {"status": ["Unknown field."]}),
    ],
)
def test_recover_refuses_unknown_fields_and_bad_values_by_name(api, body, errors):
    session = crashed(api)
    response = api.post("/sessions/recover", body, format="json")
    assert response.status_code == 400
    assert response.json() == errors
    assert Session.objects.get(pk=session["id"]).status == "crashed"


@pytest.mark.django_db
def test_recover_refuses_a_body_that_is_not_an_object(api):
    response = api.post("/sessions/recover", ["agent_id"], format="json")
    assert response.status_code == 400


@pytest.mark.django_db(transaction=True)
def test_recovery_publishes_session_updated_then_session_recovered(api, subscriber):
    session = crashed(api, checkpoint=RESUME)
    subscriber.events(session["id"], count=2)  # created, updated (crashed)

    assert api.post("/sessions/recover", {"agent_id": session["agent_id"]}, format="json").status_code == 200

    updated, recovered = subscriber.events(session["id"], count=4)[2:]
    assert updated["event_type"] == "session.updated"
    assert updated["payload"] == {
        "agent_id": session["agent_id"],
        "status": "active",
        "updates": ["status"],
        "previous_status": "crashed",
    }
    assert recovered["event_type"] == "session.recovered"
    assert recovered["aggregate_type"] == "session"
    assert recovered["aggregate_id"] == session["id"]
    assert recovered["payload"] == {
        "agent_id": session["agent_id"],
        "recovery_attempts": 1,
        "resume_prompt": "Continue from step 5",
    }


@pytest.mark.django_db(transaction=True)
def test_a_session_recovered_without_a_resume_prompt_publishes_none(api, subscriber):
    session = crashed(api, checkpoint={"step": 2})
    assert api.post(f"/sessions/{session['id']}/recover").status_code == 200
    recovered = subscriber.events(session["id"], count=4)[-1]
    assert recovered["event_type"] == "session.recovered"
    assert recovered["payload"] == {"agent_id": session["agent_id"], "recovery_attempts": 1}


@pytest.mark.django_db(transaction=True)
def test_a_refused_recovery_publishes_nothing(api, subscriber):
    session = create(api)
    assert api.post(f"/sessions/{session['id']}/recover").status_code == 409
    assert [e["event_type"] for e in subscriber.events(session["id"], timeout=0.5)] == ["session.created"]


# --- POST /sessions/{id}/recover ----------------------------------------------------


@pytest.mark.django_db
def test_a_given_crashed_session_can_be_recovered(api):
    older = crashed(api, crashed_ago=timedelta(hours=3))
    session = crashed(api, crashed_ago=timedelta(minutes=1), checkpoint=RESUME)

    response = api.post(f"/sessions/{session['id']}/recover/")

    assert response.status_code == 200
    assert response.json()["id"] == session["id"]
    assert response.json()["status"] == "active"
    assert response.json()["recovery_attempts"] == 1
    assert response.json()["checkpoint"]["resume_prompt"] == "Continue from step 5"
    assert Session.objects.get(pk=older["id"]).status == "crashed"


@pytest.mark.django_db
@pytest.mark.parametrize("current", ["active", "paused", "completed"])
def test_recovering_a_session_that_is_not_crashed_answers_409(api, current):
    session = create(api, status=current)

    response = api.post(f"/sessions/{session['id']}/recover")

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"The session is {current}: only crashed sessions are recovered.",
        "code": "not_crashed",
        "current_status": current,
        "recovery_attempts": 0,
        "max_recovery_attempts": 3,
    }
    assert Session.objects.get(pk=session["id"]).version == session["version"]


@pytest.mark.django_db
@pytest.mark.parametrize("session_id", ["8c1a3d7e-0000-4000-8000-000000000000", "nope"])
def test_recovering_an_unknown_session_answers_404(api, session_id):
    response = api.post(f"/sessions/{session_id}/recover")
    assert response.status_code == 404


@pytest.mark.django_db(transaction=True)
def test_of_callers_recovering_the_same_session_at_once_exactly_one_wins():
    session = crashed(APIClient())
    codes = run_together(10, lambda i, client: client.post(f"/sessions/{session['id']}/recover").status_code)

    assert Counter(codes) == {200: 1, 409: 9}
    assert Session.objects.get(pk=session["id"]).recovery_attempts == 1


# --- Exhausted sessions ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_session_that_has_used_up_its_attempts_is_no_longer_handed_out(api):
    session = crashed(api, crashed_ago=timedelta(hours=2))
    exhaust(session["id"])
    younger = crashed(api, crashed_ago=timedelta(minutes=2))

    response = api.post("/sessions/recover")

    assert response.json()["id"] == younger["id"]
    assert api.post("/sessions/recover").status_code == 204
    shown = api.get(f"/sessions/{session['id']}").json()
    assert shown["status"] == "crashed"
    assert shown["recoverable"] is False


@pytest.mark.django_db
def test_recovering_an_exhausted_session_by_id_answers_409(api):
    session = crashed(api)
    exhaust(session["id"])

    response = api.post(f"/sessions/{session['id']}/recover")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "The session has used up its 3 recovery attempts.",
        "code": "recovery_exhausted",
        "current_status": "crashed",
        "recovery_attempts": 3,
        "max_recovery_attempts": 3,
    }


@pytest.mark.django_db
def test_a_session_can_crash_and_be_recovered_max_recovery_attempts_times(api):
    session = crashed(api)
    for attempt in (1, 2, 3):
        response = api.post(f"/sessions/{session['id']}/recover")
        assert response.status_code == 200
        assert response.json()["recovery_attempts"] == attempt
        assert response.json()["recoverable"] is (attempt < 3)
        crash = api.patch(f"/sessions/{session['id']}", {"status": "crashed"}, format="json")
        assert crash.status_code == 200

    assert api.post(f"/sessions/{session['id']}/recover").json()["code"] == "recovery_exhausted"
    assert api.post("/sessions/recover").status_code == 204


@pytest.mark.django_db
@override_settings(MAX_RECOVERY_ATTEMPTS=1)
def test_the_number_of_attempts_comes_from_settings(api):
    session = crashed(api)
    assert api.post("/sessions/recover").json()["recoverable"] is False
    api.patch(f"/sessions/{session['id']}", {"status": "crashed"}, format="json")
    assert api.post("/sessions/recover").status_code == 204


@pytest.mark.django_db
def test_exhausted_sessions_can_be_listed_with_the_recoverable_filter(api):
    fine = crashed(api)
    used_up = crashed(api)
    exhaust(used_up["id"])

    exhausted = api.get("/sessions/", {"recoverable": "false"}).json()["results"]
    recoverable = api.get("/sessions/", {"recoverable": "true", "status": "crashed"}).json()["results"]

    assert [s["id"] for s in exhausted] == [used_up["id"]]
    assert [s["id"] for s in recoverable] == [fine["id"]]


@pytest.mark.django_db
def test_the_recoverable_filter_refuses_a_value_that_is_not_a_boolean(api):
    response = api.get("/sessions/", {"recoverable": "maybe"})
    assert response.status_code == 400
    assert response.json() == {"recoverable": ["Must be true or false."]}


@pytest.mark.django_db
def test_the_recoverable_filter_on_its_own(api):
    fine = crashed(api)
    used_up = crashed(api)
    exhaust(used_up["id"])
    queryset = Session.objects.all()

    assert [str(s.pk) for s in SessionFilterSet({"recoverable": "true"}, queryset=queryset).qs] == [fine["id"]]
    assert [str(s.pk) for s in SessionFilterSet({"recoverable": "0"}, queryset=queryset).qs] == [used_up["id"]]
    assert SessionFilterSet({"recoverable": ""}, queryset=queryset).qs.count() == 2


# --- Twenty callers at once -----------------------------------------------------------


def _recover_concurrently(callers: int) -> list[tuple[int, str | None]]:
    """``callers`` threads, each with its own client and database connection, all POST at once."""

    def caller(i, client) -> tuple[int, str | None]:
        response = client.post("/sessions/recover", {}, format="json")
        return response.status_code, (response.json()["id"] if response.status_code == 200 else None)

    results = run_together(callers, caller)
    assert len(results) == callers
    return results


@pytest.mark.django_db(transaction=True)
def test_twenty_callers_at_once_never_receive_the_same_session():
    api = APIClient()
    ids = {crashed(api, crashed_ago=timedelta(minutes=n + 1))["id"] for n in range(20)}

    results = _recover_concurrently(20)

    claimed = [session_id for code, session_id in results]
    assert all(code == 200 for code, _ in results)
    assert len(set(claimed)) == 20  # nobody got a session twice
    assert set(claimed) == ids
    assert set(Session.objects.values_list("status", "recovery_attempts")) == {("active", 1)}


@pytest.mark.django_db(transaction=True)
def test_twenty_callers_for_five_sessions_get_five_sessions_and_fifteen_204s():
    api = APIClient()
    ids = {crashed(api, crashed_ago=timedelta(minutes=n + 1))["id"] for n in range(5)}

    results = _recover_concurrently(20)

    assert Counter(code for code, _ in results) == {200: 5, 204: 15}
    claimed = [session_id for code, session_id in results if code == 200]
    assert sorted(claimed) == sorted(ids)
    assert set(Session.objects.values_list("recovery_attempts", flat=True)) == {1}


# --- recover_sessions -------------------------------------------------------------------


@pytest.mark.django_db
def test_recover_sessions_recovers_every_recoverable_crashed_session_and_says_so(api):
    first = crashed(api, crashed_ago=timedelta(hours=2), checkpoint=RESUME)
    second = crashed(api, crashed_ago=timedelta(hours=1))
    used_up = crashed(api)
    exhaust(used_up["id"])
    untouched = create(api)
    out = StringIO()

    call_command("recover_sessions", stdout=out)

    assert out.getvalue().splitlines() == [
        f"Recovered {first['id']} (agent {first['agent_id']}, task, attempt 1 of 3): "
        "resume with 'Continue from step 5'",
        f"Recovered {second['id']} (agent {second['agent_id']}, task, attempt 1 of 3): "
        "no resume_prompt in its checkpoint",
        "Recovered 2 session(s). 1 crashed session(s) have used up their 3 recovery attempts.",
    ]
    statuses = dict(Session.objects.values_list("id", "status"))
    assert {str(k): v for k, v in statuses.items()} == {
        first["id"]: "active",
        second["id"]: "active",
        used_up["id"]: "crashed",
        untouched["id"]: "active",
    }


@pytest.mark.django_db
def test_recover_sessions_can_be_narrowed_to_one_agent(api):
    mine = crashed(api)
    theirs = crashed(api)
    out = StringIO()

    call_command("recover_sessions", "--agent-id", mine["agent_id"], stdout=out)

    assert out.getvalue().splitlines()[-1] == "Recovered 1 session(s)."
    assert Session.objects.get(pk=mine["id"]).status == "active"
    assert Session.objects.get(pk=theirs["id"]).status == "crashed"


@pytest.mark.django_db
def test_recover_sessions_dry_run_only_says_what_it_would_do(api):
    session = crashed(api, checkpoint=RESUME)
    out = StringIO()

    call_command("recover_sessions", "--dry-run", stdout=out)

    assert out.getvalue().splitlines() == [
        f"Would recover {session['id']} (agent {session['agent_id']}, task, attempt 1 of 3): "
        "resume with 'Continue from step 5'",
        "Would recover 1 session(s).",
    ]
    stored = Session.objects.get(pk=session["id"])
    assert (stored.status, stored.recovery_attempts) == ("crashed", 0)


@pytest.mark.django_db
def test_recover_sessions_with_nothing_to_do(api):
    out = StringIO()
    call_command("recover_sessions", stdout=out)
    assert out.getvalue() == "Recovered 0 session(s).\n"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--agent-id", "agent-7"], "--agent-id: 'agent-7' is not a UUID."),
        (["--limit", "0"], "--limit: must be at least 1."),
    ],
)
def test_recover_sessions_refuses_bad_arguments(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("recover_sessions", *arguments, stdout=StringIO())


@pytest.mark.django_db
def test_recover_sessions_limit_recovers_at_most_that_many(api):
    for n in range(3):
        crashed(api, crashed_ago=timedelta(minutes=n + 1))
    run = recovery.recover_crashed_sessions(limit=2)
    assert len(run.sessions) == 2
    assert Session.objects.filter(status="crashed").count() == 1
