"""The event store: durable events, the relay, replay through the API, and tail_events."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from sessions_app import lifecycle
from sessions_app.models import Event, Session

from .conftest import AGENT, command_env, create, new_agent

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
DEAD_REDIS = "redis://127.0.0.1:6399/0"  # nothing listens there: Redis is "down"


def relay_once() -> str:
    out = io.StringIO()
    call_command("relay_events", "--once", stdout=out)
    return out.getvalue()


def test_every_committed_change_leaves_its_event_and_the_message_carries_the_sequence(api, subscriber):
    session = create(api)
    api.patch(f"/sessions/{session['id']}", {"status": "paused"}, format="json")
    stored = list(Event.objects.filter(aggregate_id=session["id"]).order_by("sequence"))
    assert [e.event_type for e in stored] == ["session.created", "session.updated"]
    assert all(e.published_at is not None for e in stored)
    received = subscriber.events(session["id"], count=2)
    assert [m["sequence"] for m in received] == [e.sequence for e in stored]
    assert [m["event_id"] for m in received] == [str(e.event_id) for e in stored]
    assert stored[0].sequence < stored[1].sequence


def test_a_rolled_back_change_stores_and_publishes_nothing(subscriber):
    session = lifecycle.create_session({"agent_id": AGENT, "session_type": "task"})
    before = Event.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        lifecycle.update_session(session.pk, {"context": {"lost": True}})
        raise RuntimeError("roll back")
    assert Event.objects.count() == before
    assert [m["event_type"] for m in subscriber.events(session.pk, timeout=0.8)] == ["session.created"]


def test_a_thousand_changes_while_redis_is_down_all_arrive_once_in_order(api, settings, subscriber):
    real_redis = settings.REDIS_URL
    settings.REDIS_URL = DEAD_REDIS
    sessions = [create(api, agent_id=new_agent())["id"] for _ in range(20)]
    for step in range(49):
        for session_id in sessions:
            response = api.patch(f"/sessions/{session_id}", {"checkpoint": {"step": step}}, format="json")
            assert response.status_code == 200
    stored = list(Event.objects.order_by("sequence"))
    assert len(stored) == 1000
    assert all(e.published_at is None for e in stored)
    assert subscriber.events(sessions, timeout=0.3) == []

    settings.REDIS_URL = real_redis  # Redis is back
    assert "Published 1000 event(s); 0 still unpublished." in relay_once()

    received = subscriber.events(sessions, count=1000, timeout=10)
    assert len(received) == 1000
    assert len({m["event_id"] for m in received}) == 1000
    per_session = defaultdict(list)
    for message in received:
        per_session[message["aggregate_id"]].append(message["sequence"])
    for session_id in sessions:
        assert per_session[session_id] == sorted(per_session[session_id])
        assert len(per_session[session_id]) == 50
    assert not Event.objects.filter(published_at__isnull=True).exists()


def test_a_session_s_backlog_goes_out_first_and_in_order_when_redis_comes_back(api, settings, subscriber):
    real_redis = settings.REDIS_URL
    session = create(api)
    settings.REDIS_URL = DEAD_REDIS
    api.patch(f"/sessions/{session['id']}", {"context": {"n": 1}}, format="json")  # stored, not published
    api.patch(f"/sessions/{session['id']}", {"context": {"n": 2}}, format="json")
    assert Event.objects.filter(aggregate_id=session["id"], published_at__isnull=True).count() == 2
    settings.REDIS_URL = real_redis
    api.patch(f"/sessions/{session['id']}", {"context": {"n": 3}}, format="json")  # takes its backlog along
    assert not Event.objects.filter(aggregate_id=session["id"], published_at__isnull=True).exists()
    received = subscriber.events(session["id"], count=4)
    assert [m["payload"].get("updates") for m in received] == [None, ["context"], ["context"], ["context"]]
    sequences = [m["sequence"] for m in received]
    assert sequences == sorted(sequences) and len(set(sequences)) == 4


def _unpublished_events(settings, count: int) -> tuple[str, list[int]]:
    """One session with `count` events that could not be published; answer its id and their sequences."""
    real = settings.REDIS_URL
    settings.REDIS_URL = DEAD_REDIS
    session = lifecycle.create_session({"agent_id": AGENT, "session_type": "task"})
    for n in range(count - 1):
        lifecycle.update_session(session.pk, {"context": {"n": n}})
    settings.REDIS_URL = real
    return str(session.pk), list(Event.objects.order_by("sequence").values_list("sequence", flat=True))


def test_a_relay_killed_in_the_middle_of_a_batch_loses_nothing_after_a_restart(settings, subscriber):
    session_id, sequences = _unpublished_events(settings, 300)
    relay = subprocess.Popen(
        [sys.executable, "manage.py", "relay_events", "--batch-size", "5", "--pause", "0.02"],
        cwd=ROOT, env=command_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        subscriber.events(session_id, count=40, timeout=20)
    finally:
        relay.kill()  # SIGKILL: no chance to finish its batch
        relay.wait()
    left = Event.objects.filter(published_at__isnull=True).count()
    assert 0 < left < 300, "the relay should have been killed half-way"

    relay_once()
    received = subscriber.events(session_id, count=300, timeout=10)  # a killed batch may come twice
    assert {m["sequence"] for m in received} == set(sequences)
    first_seen = list(dict.fromkeys(m["sequence"] for m in received))
    assert first_seen == sorted(first_seen)


def test_two_relays_at_once_neither_skip_nor_reorder(settings, subscriber):
    session_id, sequences = _unpublished_events(settings, 400)
    relays = [
        subprocess.Popen(
            [sys.executable, "manage.py", "relay_events", "--once", "--batch-size", "20"],
            cwd=ROOT,
            env=command_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    for relay in relays:
        out, err = relay.communicate(timeout=60)
        assert relay.returncode == 0, err
    received = [m["sequence"] for m in subscriber.events(session_id, count=400, timeout=10)]
    assert received == sequences


def test_the_relay_waits_for_redis_and_then_delivers(settings, subscriber):
    _unpublished_events(settings, 5)
    settings.REDIS_URL = DEAD_REDIS
    out = io.StringIO()
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Redis refused"):
        call_command("relay_events", "--once", stdout=out)
    assert Event.objects.filter(published_at__isnull=True).count() == 5


# --- Replay through the API -----------------------------------------------------


def test_a_session_s_events_in_order(api):
    session = create(api)
    api.patch(f"/sessions/{session['id']}", {"status": "paused"}, format="json")
    api.patch(f"/sessions/{session['id']}", {"status": "completed"}, format="json")
    create(api)  # another session's events are not listed
    body = api.get(f"/sessions/{session['id']}/events/").json()
    assert [e["event_type"] for e in body["results"]] == ["session.created", "session.updated", "session.updated"]
    assert [e["payload"].get("previous_status") for e in body["results"]] == [None, "active", "paused"]
    assert body["next"] is None
    assert api.get("/sessions/660e8400-e29b-41d4-a716-446655440001/events/").status_code == 404
    # The log outlives the session.
    api.delete(f"/sessions/{session['id']}")
    after_delete = api.get(f"/sessions/{session['id']}/events").json()["results"]
    assert after_delete[-1]["event_type"] == "session.deleted"


def test_catching_up_with_after_and_cursor_paging(api):
    first = create(api, agent_id=new_agent())
    second = create(api)
    for n in range(5):
        api.patch(f"/sessions/{first['id']}", {"context": {"n": n}}, format="json")
    everything = [e["sequence"] for e in api.get("/events/?limit=1000").json()["results"]]
    assert everything == sorted(everything) and len(everything) == 7

    seen, url = [], f"/events/?after={everything[0]}&limit=2"
    while url:
        page = api.get(url).json()
        seen += [e["sequence"] for e in page["results"]]
        url = page["next"]
    assert seen == everything[1:]
    assert page["last_sequence"] == everything[-1]

    mine = api.get(f"/events/?agent_id={AGENT}").json()["results"]
    assert [e["aggregate_id"] for e in mine] == [second["id"]]
    of_first = api.get(f"/events/?aggregate_id={first['id']}&event_type=session.created").json()["results"]
    assert len(of_first) == 1
    for bad in ("after=x", "agent_id=1", "event_type=nope", "limit=0", "aggregate_id=zz"):
        response = api.get(f"/events/?{bad}")
        assert response.status_code == 400, bad
        assert bad.split("=")[0] in response.json()


# --- tail_events ----------------------------------------------------------------


def test_tail_replays_then_follows_live_without_a_gap_or_a_duplicate(api):
    session = create(api)
    for n in range(4):
        api.patch(f"/sessions/{session['id']}", {"context": {"n": n}}, format="json")
    first = Event.objects.order_by("sequence").first().sequence
    out = io.StringIO()

    def tail():
        try:
            call_command("tail_events", "--from-sequence", str(first + 1), "--count", "9", "--json", stdout=out)
        finally:
            connection.close()

    thread = threading.Thread(target=tail)
    thread.start()
    time.sleep(0.5)
    for n in range(5):  # live, while the replay may still be running
        api.patch(f"/sessions/{session['id']}", {"context": {"live": n}}, format="json")
    thread.join(timeout=20)
    assert not thread.is_alive()
    import json

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    expected = list(Event.objects.filter(sequence__gt=first).order_by("sequence").values_list("sequence", flat=True))
    assert [m["sequence"] for m in lines] == expected
    assert len(expected) == 9


def test_tail_prints_readable_lines_filtered_by_agent(api):
    other = create(api, agent_id=new_agent())
    mine = create(api)
    api.patch(f"/sessions/{mine['id']}", {"status": "paused"}, format="json")
    out = io.StringIO()
    call_command("tail_events", "--from-sequence", "1", "--agent-id", AGENT, "--no-follow", stdout=out)
    text = out.getvalue()
    assert "session.created" in text and "status active -> paused" in text
    assert mine["id"] in text and other["id"] not in text


# --- Retention ------------------------------------------------------------------


def test_cleanup_events_removes_old_published_events_but_never_unpublished_ones(api, settings):
    create(api)
    create(api)
    Event.objects.update(occurred_at=timezone.now() - timedelta(days=40))
    unpublished = Event.objects.order_by("sequence").first()
    Event.objects.filter(pk=unpublished.pk).update(published_at=None)
    create(api)  # a recent event stays
    out = io.StringIO()
    call_command("cleanup_events", "--dry-run", stdout=out)
    assert "Would remove 1 published event(s)" in out.getvalue()
    call_command("cleanup_events", stdout=io.StringIO())
    left = set(Event.objects.values_list("sequence", flat=True))
    assert unpublished.sequence in left
    assert len(left) == 2
    assert Session.objects.count() == 3
