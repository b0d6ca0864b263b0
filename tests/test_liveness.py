"""Liveness: heartbeats, activity, and the crash detector (function, command, and a real process)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models.signals import post_save
from django.utils import timezone

from sessions_app import recovery
from sessions_app.durations import parse_duration
from sessions_app.models import Session

from .conftest import command_env, create, new_agent, run_together

BASE_DIR = Path(__file__).resolve().parent.parent


def age(session_id, **ago: timedelta) -> None:
    """Move a session's timestamps into the past, e.g. age(pk, last_activity_at=timedelta(hours=1))."""
    now = timezone.now()
    Session.objects.filter(pk=session_id).update(**{name: now - delta for name, delta in ago.items()})


def stale_session(api, *, idle: timedelta = timedelta(hours=1), **fields) -> dict:
    body = create(api, agent_id=new_agent(), **fields)
    age(body["id"], last_activity_at=idle)
    return body


# --- Heartbeats ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_heartbeat_records_that_the_agent_is_alive_and_answers_204(api):
    body = create(api)
    age(body["id"], last_activity_at=timedelta(hours=1))
    before = timezone.now()

    response = api.post(f"/sessions/{body['id']}/heartbeat")

    assert response.status_code == 204
    assert response.content == b""
    stored = Session.objects.get(pk=body["id"])
    assert stored.last_heartbeat_at >= before
    assert stored.last_activity_at == stored.last_heartbeat_at
    assert stored.version == body["version"]  # not a change of the session: the ETag stays


@pytest.mark.django_db
def test_a_heartbeat_is_one_write(api, django_assert_num_queries):
    body = create(api)
    with django_assert_num_queries(1) as captured:
        assert api.post(f"/sessions/{body['id']}/heartbeat/").status_code == 204
    assert captured.captured_queries[0]["sql"].startswith("UPDATE")


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_publishes_nothing(api, subscriber):
    body = create(api)
    subscriber.events(body["id"], count=1)  # session.created

    assert api.post(f"/sessions/{body['id']}/heartbeat").status_code == 204

    assert [e["event_type"] for e in subscriber.events(body["id"], timeout=1.0)] == ["session.created"]


@pytest.mark.django_db
def test_a_paused_session_takes_heartbeats_too(api):
    body = create(api, status="paused")
    assert api.post(f"/sessions/{body['id']}/heartbeat").status_code == 204
    assert Session.objects.get(pk=body["id"]).last_heartbeat_at is not None


@pytest.mark.django_db
@pytest.mark.parametrize("ended", ["completed", "crashed"])
def test_a_heartbeat_for_an_ended_session_answers_409(api, ended):
    body = create(api, status=ended)

    response = api.post(f"/sessions/{body['id']}/heartbeat")

    assert response.status_code == 409
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": f"The session is {ended}: heartbeats are taken from active or paused sessions only.",
        "code": "session_ended",
        "current_status": ended,
    }
    assert Session.objects.get(pk=body["id"]).last_heartbeat_at is None


@pytest.mark.django_db
@pytest.mark.parametrize("session_id", ["8c1a3d7e-0000-4000-8000-000000000000", "not-a-uuid"])
def test_a_heartbeat_for_an_unknown_session_answers_404(api, session_id):
    response = api.post(f"/sessions/{session_id}/heartbeat")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.django_db
def test_any_change_to_a_session_counts_as_activity(api):
    body = create(api)
    age(body["id"], last_activity_at=timedelta(hours=2))
    before = timezone.now()

    assert api.patch(f"/sessions/{body['id']}", {"context": {"step": 2}}, format="json").status_code == 200

    assert Session.objects.get(pk=body["id"]).last_activity_at >= before


@pytest.mark.django_db(transaction=True)
def test_a_crash_reported_through_the_api_carries_its_reason(api, subscriber):
    body = create(api)

    response = api.patch(f"/sessions/{body['id']}", {"status": "crashed", "crash_reason": "OOM killed"}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "crashed"
    assert response.json()["crash_reason"] == "OOM killed"
    assert response.json()["ended_at"] is not None
    updated = subscriber.events(body["id"], count=2)[-1]
    assert updated["event_type"] == "session.updated"
    assert updated["payload"]["previous_status"] == "active"
    assert updated["payload"]["crash_reason"] == "OOM killed"


@pytest.mark.django_db
def test_a_crash_reported_through_the_api_may_leave_out_its_reason(api):
    body = create(api)
    response = api.patch(f"/sessions/{body['id']}", {"status": "crashed"}, format="json")
    assert response.status_code == 200
    assert response.json()["crash_reason"] == ""


# --- Durations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        (" 90M ", timedelta(minutes=90)),
    ],
)
def test_durations_are_written_as_a_number_and_a_unit(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["15", "15x", "m", "", "-5m", "1.5h", "0m", "15 minutes", "999999999999d"])
def test_a_bad_duration_is_refused_with_a_clear_message(text):
    with pytest.raises(ValueError, match=r"duration|too long"):
        parse_duration(text)


# --- The crash detector: one pass -----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_detector_marks_active_sessions_idle_for_too_long_as_crashed(api, subscriber):
    stale = stale_session(api, idle=timedelta(minutes=20))
    fresh = stale_session(api, idle=timedelta(minutes=5))
    paused = stale_session(api, idle=timedelta(hours=3), status="paused")
    out = StringIO()

    call_command("detect_crashed_sessions", "--stale-after", "15m", "--once", stdout=out)

    assert out.getvalue() == "Marked 1 session(s) crashed: no activity for more than 15m.\n"
    crashed = Session.objects.get(pk=stale["id"])
    assert crashed.status == "crashed"
    assert crashed.crash_reason == "heartbeat_timeout"
    assert crashed.ended_at is not None
    assert crashed.version == stale["version"] + 1
    assert Session.objects.get(pk=fresh["id"]).status == "active"
    assert Session.objects.get(pk=paused["id"]).status == "paused"

    event = subscriber.events(stale["id"], count=2)[-1]
    assert event["event_type"] == "session.updated"
    assert event["payload"] == {
        "agent_id": stale["agent_id"],
        "status": "crashed",
        "updates": ["status"],
        "previous_status": "active",
        "crash_reason": "heartbeat_timeout",
    }
    assert [e["event_type"] for e in subscriber.events(fresh["id"], timeout=0.3)] == ["session.created"]


@pytest.mark.django_db
def test_a_recent_heartbeat_keeps_a_session_from_being_marked(api):
    body = stale_session(api, idle=timedelta(hours=1))
    assert api.post(f"/sessions/{body['id']}/heartbeat").status_code == 204

    assert recovery.mark_stale_sessions_crashed(timedelta(minutes=15)) == []
    assert Session.objects.get(pk=body["id"]).status == "active"


@pytest.mark.django_db
def test_the_detector_says_so_when_it_finds_nothing(api):
    out = StringIO()
    call_command("detect_crashed_sessions", "--stale-after", "15m", "--once", stdout=out)
    assert out.getvalue() == "Marked 0 session(s) crashed: no activity for more than 15m.\n"


@pytest.mark.django_db
def test_the_detector_names_each_session_it_marks_when_verbose(api):
    body = stale_session(api)
    out = StringIO()
    call_command("detect_crashed_sessions", "--stale-after", "30m", "--once", "--verbosity", "2", stdout=out)
    assert f"  {body['id']} (agent {body['agent_id']}): last activity" in out.getvalue()


@pytest.mark.django_db
def test_the_detector_works_through_more_sessions_than_one_batch(api):
    ids = [stale_session(api)["id"] for _ in range(7)]
    marked = recovery.mark_stale_sessions_crashed(timedelta(minutes=15), batch_size=3)
    assert sorted(str(s.pk) for s in marked) == sorted(ids)
    assert Session.objects.filter(pk__in=ids, status="crashed").count() == 7


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--stale-after", "15"], "--stale-after: '15' is not a duration"),
        (["--stale-after", "soon"], "--stale-after: 'soon' is not a duration"),
        (["--stale-after", "0s"], "--stale-after: '0s' is not a duration: it must be longer than zero."),
        (["--stale-after", "15m", "--interval", "1x"], "--interval: '1x' is not a duration"),
        (["--stale-after", "15m", "--batch-size", "0"], "--batch-size: must be at least 1."),
        ([], "the following arguments are required: --stale-after"),
    ],
)
def test_the_detector_refuses_bad_arguments_with_a_clear_message(arguments, message):
    with pytest.raises(CommandError) as raised:
        call_command("detect_crashed_sessions", *arguments, "--once", stdout=StringIO())
    assert message in str(raised.value)


# --- The crash detector: concurrency --------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_several_detectors_running_at_once_never_mark_a_session_twice(api, subscriber):
    ids = {stale_session(api)["id"] for _ in range(60)}

    def detector(i, client) -> list[str]:
        return [str(s.pk) for s in recovery.mark_stale_sessions_crashed(timedelta(minutes=15), batch_size=5)]

    marked = [pk for found in run_together(4, detector) for pk in found]

    assert sorted(marked) == sorted(ids)  # every session once, none twice
    assert set(Session.objects.filter(pk__in=ids).values_list("version", flat=True)) == {1 + 1}
    deadline = time.monotonic() + 10
    while True:
        seen = subscriber.events(timeout=0.2)
        crashes = [e["aggregate_id"] for e in seen if e["event_type"] == "session.updated" and e["aggregate_id"] in ids]
        if len(crashes) >= len(ids) or time.monotonic() > deadline:
            break
    assert sorted(crashes) == sorted(ids)  # one session.updated each


@pytest.mark.django_db(transaction=True)
def test_a_session_being_written_right_now_is_left_for_the_next_pass(api):
    busy = stale_session(api)
    idle = stale_session(api)
    locked, release = threading.Event(), threading.Event()

    def writer() -> None:
        try:
            with transaction.atomic():
                Session.objects.select_for_update().get(pk=busy["id"])
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert locked.wait(10)
        first = recovery.mark_stale_sessions_crashed(timedelta(minutes=15))
    finally:
        release.set()
        thread.join()

    assert [str(s.pk) for s in first] == [idle["id"]]
    second = recovery.mark_stale_sessions_crashed(timedelta(minutes=15))
    assert [str(s.pk) for s in second] == [busy["id"]]


@pytest.mark.django_db(transaction=True)
def test_a_session_completed_by_its_agent_meanwhile_is_not_marked(api):
    body = stale_session(api)
    assert api.patch(f"/sessions/{body['id']}", {"status": "completed"}, format="json").status_code == 200
    age(body["id"], last_activity_at=timedelta(hours=1))

    assert recovery.mark_stale_sessions_crashed(timedelta(minutes=15)) == []
    assert Session.objects.get(pk=body["id"]).status == "completed"


# --- The crash detector: the long-running loop ----------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_detector_loop_keeps_checking_until_it_is_stopped(api):
    stop = threading.Event()
    passes: list[int] = []
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = recovery.run_crash_detector(
                timedelta(minutes=15),
                interval=timedelta(seconds=0.05),
                stop=stop,
                report=lambda marked: passes.append(len(marked)),
            )
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(passes) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        body = stale_session(api)  # goes stale while the loop runs: a later pass finds it
        while Session.objects.get(pk=body["id"]).status != "crashed" and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)

    assert not thread.is_alive()
    assert Session.objects.get(pk=body["id"]).status == "crashed"
    count, total = outcome["result"]
    assert count == len(passes) >= 3
    assert total == sum(passes) == 1


@pytest.mark.django_db(transaction=True)
def test_a_stop_during_a_pass_lets_the_current_batch_finish_and_starts_no_other(api):
    ids = [stale_session(api)["id"] for _ in range(5)]
    stop = threading.Event()

    def stop_on_first_save(sender, instance, **kwargs) -> None:
        stop.set()  # as a SIGTERM arriving in the middle of the first batch

    post_save.connect(stop_on_first_save, sender=Session, dispatch_uid="test_stop_on_first_save")
    try:
        marked = recovery.mark_stale_sessions_crashed(timedelta(minutes=15), batch_size=2, stop=stop)
    finally:
        post_save.disconnect(dispatch_uid="test_stop_on_first_save", sender=Session)

    assert len(marked) == 2  # the whole first batch, committed
    assert Session.objects.filter(pk__in=ids, status="crashed").count() == 2
    assert Session.objects.filter(pk__in=ids, status="active").count() == 3


@pytest.mark.django_db(transaction=True)
def test_the_detector_command_runs_until_sigterm_and_exits_cleanly(api):
    body = stale_session(api)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "detect_crashed_sessions", "--stale-after", "15m", "--interval", "1s"],
        cwd=BASE_DIR,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while Session.objects.get(pk=body["id"]).status != "crashed" and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        assert Session.objects.get(pk=body["id"]).status == "crashed"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, err
    assert out.splitlines()[0] == "Checking every 1s for active sessions idle for more than 15m."
    assert "Marked 1 session(s) crashed: no activity for more than 15m." in out
    assert out.splitlines()[-1].startswith("Stopped after ")
    assert out.splitlines()[-1].endswith("pass(es); marked 1 session(s) crashed.")
    assert "Traceback" not in err


def test_the_detector_command_exits_non_zero_on_a_bad_duration():
    process = subprocess.run(
        [sys.executable, "manage.py", "detect_crashed_sessions", "--stale-after", "15 minutes", "--once"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode != 0
    assert "--stale-after: '15 minutes' is not a duration" in process.stderr
