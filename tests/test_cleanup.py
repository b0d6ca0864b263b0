"""cleanup_sessions: old sessions deleted with their history, in short batches, saying what it does."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from sessions_app import lifecycle
from sessions_app.maintenance import _relations_to_session, cleanup_sessions
from sessions_app.models import Checkpoint, IdempotencyKey, Session

from .conftest import create, new_agent

BASE_DIR = Path(__file__).resolve().parent.parent


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def many(count: int, *, status: str = "completed", agent_id: str | None = None) -> list[uuid.UUID]:
    """``count`` sessions at once (bulk insert: no events), each with one checkpoint entry."""
    agent = agent_id or new_agent()
    sessions = Session.objects.bulk_create(
        Session(agent_id=agent, session_type="batch", status=status, checkpoint={"step": n}) for n in range(count)
    )
    Checkpoint.objects.bulk_create(Checkpoint(session=s, number=1, checkpoint=s.checkpoint) for s in sessions)
    return [s.pk for s in sessions]


def age(ids, days: float) -> None:
    Session.objects.filter(pk__in=list(ids)).update(updated_at=timezone.now() - timedelta(days=days))


def aged(api, days: float, **fields) -> dict:
    body = create(api, **fields)
    age([body["id"]], days)
    return body


@pytest.mark.django_db(transaction=True)
def test_cleanup_deletes_old_completed_sessions_and_their_history_in_batches():
    old = many(2500)
    age(old, days=31)
    recent = many(3)
    age(recent, days=29)
    old_active = many(2, status="active")
    age(old_active, days=90)
    out = StringIO()

    call_command("cleanup_sessions", "--older-than", "30d", "--batch-size", "1000", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "Deleted 1000 of 2500 session(s)",
        "Deleted 2000 of 2500 session(s)",
        "Deleted 2500 of 2500 session(s)",
    ]
    assert lines[3].startswith("Deleted 2500 completed session(s) (completed: 2500) last updated before ")
    assert "(30d ago), with 2500 checkpoint(s), in 3 batch(es) and " in lines[3]
    assert lines[3].endswith("s.")
    assert len(lines) == 4
    assert not Session.objects.filter(pk__in=old).exists()
    assert not Checkpoint.objects.filter(session_id__in=old).exists()
    assert Session.objects.filter(pk__in=recent + old_active).count() == 5
    assert Checkpoint.objects.filter(session_id__in=recent + old_active).count() == 5


@pytest.mark.django_db(transaction=True)
def test_each_batch_is_committed_before_the_next_one_starts():
    ids = many(25)
    age(ids, days=40)
    seen_by_others: list[tuple[int, int]] = []

    def count_from_another_connection() -> int:
        result: list[int] = []

        def count() -> None:
            try:
                result.append(Session.objects.filter(pk__in=ids).count())
            finally:
                connection.close()

        thread = threading.Thread(target=count)
        thread.start()
        thread.join()
        return result[0]

    def progress(done: int, total: int) -> None:
        assert not connection.in_atomic_block  # no transaction spans batches
        seen_by_others.append((done, count_from_another_connection()))

    result = cleanup_sessions(timedelta(days=30), batch_size=10, progress=progress)

    assert result.batches == 3
    assert seen_by_others == [(10, 15), (20, 5), (25, 0)]


def cleaned_events(subscriber, ids: set[str], *, expected: int) -> list[dict]:
    """The sessions.cleaned events that name any of ``ids``, waiting until ``expected`` arrived."""
    deadline = time.monotonic() + 10
    while True:
        found = [
            e
            for e in subscriber.events(timeout=0.2)
            if e["event_type"] == "sessions.cleaned" and ids & set(e["payload"]["session_ids"])
        ]
        if len(found) >= expected or time.monotonic() > deadline:
            return found


@pytest.mark.django_db(transaction=True)
def test_each_batch_publishes_one_sessions_cleaned_event_after_it_commits(api, subscriber):
    bodies = [aged(api, 45, status="completed") for _ in range(5)]
    ids = {b["id"] for b in bodies}
    subscriber.events(count=5)

    call_command("cleanup_sessions", "--older-than", "30d", "--batch-size", "2", stdout=StringIO())

    batches = cleaned_events(subscriber, ids, expected=3)
    assert [e["payload"]["batch"] for e in batches] == [1, 2, 3]
    assert [e["payload"]["count"] for e in batches] == [2, 2, 1]
    assert sorted(i for e in batches for i in e["payload"]["session_ids"]) == sorted(ids)
    assert [e["payload"]["statuses"] for e in batches] == [{"completed": 2}, {"completed": 2}, {"completed": 1}]
    assert len({e["aggregate_id"] for e in batches}) == 1  # the run's id, shared by its batches
    assert batches[0]["aggregate_type"] == "session"
    assert set(batches[0]) >= {"event_id", "event_type", "aggregate_type", "aggregate_id", "occurred_at", "payload"}
    assert "agent_id" not in batches[0]["payload"]
    cutoff = batches[0]["payload"]["updated_before"]
    assert timezone.now() - timedelta(days=30, minutes=1) < datetime.fromisoformat(cutoff) < timezone.now()
    # The rows go without one session.deleted each.
    assert not [
        e for e in subscriber.events(timeout=0.3) if e["event_type"] == "session.deleted" and e["aggregate_id"] in ids
    ]


@pytest.mark.django_db(transaction=True)
def test_a_cleanup_narrowed_to_an_agent_names_it_in_its_events(api, subscriber):
    agent = new_agent()
    body = aged(api, 45, agent_id=agent, status="completed")

    call_command("cleanup_sessions", "--older-than", "30d", "--agent-id", agent, stdout=StringIO())

    (event,) = cleaned_events(subscriber, {body["id"]}, expected=1)
    assert event["payload"]["agent_id"] == agent
    assert event["payload"]["session_ids"] == [body["id"]]


def test_a_cleanup_sees_every_relation_that_points_at_a_session_hidden_ones_too():
    """Cleanup deletes without the ORM's collector: it must find what the collector would."""
    relations = {(r.related_model.__name__, r.field.name, r.on_delete.__name__) for r in _relations_to_session()}
    assert relations == {
        ("Checkpoint", "session", "CASCADE"),
        ("IdempotencyKey", "session", "CASCADE"),
        ("Session", "parent", "SET_NULL"),
    }


@pytest.mark.django_db
def test_a_dry_run_only_counts():
    ids = many(7)
    age(ids, days=60)
    out = StringIO()

    call_command("cleanup_sessions", "--older-than", "30d", "--dry-run", stdout=out)

    assert out.getvalue().startswith("Dry run: would delete 7 completed session(s) (completed: 7) last updated before ")
    assert out.getvalue().endswith("(30d ago), with 7 checkpoint(s). Nothing was deleted.\n")
    assert Session.objects.filter(pk__in=ids).count() == 7


@pytest.mark.django_db
def test_other_statuses_can_be_chosen_and_an_agent_singled_out(api):
    agent = new_agent()
    crashed = aged(api, 10, agent_id=agent, status="crashed")
    completed = aged(api, 10, agent_id=agent, status="completed")
    paused = aged(api, 10, agent_id=agent, status="paused")
    someone_elses = aged(api, 10, status="crashed")
    out = StringIO()

    call_command(
        "cleanup_sessions",
        "--older-than",
        "7d",
        "--status",
        "crashed",
        "--status",
        "completed",
        "--agent-id",
        agent,
        stdout=out,
    )

    progress, summary = out.getvalue().splitlines()
    assert progress == "Deleted 2 of 2 session(s)"
    assert summary.startswith(
        f"Deleted 2 completed/crashed session(s) of agent {agent} (completed: 1, crashed: 1) last updated before "
    )
    remaining = {str(pk) for pk in Session.objects.values_list("pk", flat=True)}
    assert remaining == {paused["id"], someone_elses["id"]}
    assert crashed["id"] not in remaining and completed["id"] not in remaining


@pytest.mark.django_db
def test_forks_outlive_the_session_they_came_from(api):
    parent = create(api, status="completed")
    fork = lifecycle.fork_session(parent["id"])
    age([parent["id"]], days=31)

    call_command("cleanup_sessions", "--older-than", "30d", stdout=StringIO())

    assert not Session.objects.filter(pk=parent["id"]).exists()
    fork.refresh_from_db()
    assert fork.parent_id is None


@pytest.mark.django_db
def test_idempotency_keys_go_with_their_session(api):
    response = api.post(
        "/sessions/",
        {"agent_id": new_agent(), "session_type": "task", "status": "completed"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="run-1",
    )
    age([response.json()["id"]], days=31)

    call_command("cleanup_sessions", "--older-than", "30d", stdout=StringIO())

    assert not IdempotencyKey.objects.filter(key="run-1").exists()


@pytest.mark.django_db
def test_on_a_terminal_it_shows_a_progress_bar():
    ids = many(30)
    age(ids, days=31)
    out = Terminal()

    call_command("cleanup_sessions", "--older-than", "30d", "--batch-size", "10", stdout=out)

    text = out.getvalue()
    assert "\r[##########--------------------] 10/30 sessions (33%)" in text
    assert "\r[##############################] 30/30 sessions (100%)\n" in text
    assert text.splitlines()[-1].startswith("Deleted 30 completed session(s)")
    assert "Deleted 10 of 30" not in text


@pytest.mark.django_db
def test_with_nothing_to_delete_it_says_so():
    out = StringIO()
    call_command("cleanup_sessions", "--older-than", "30d", stdout=out)
    assert out.getvalue().startswith("Deleted 0 completed session(s) last updated before ")
    assert "in 0 batch(es)" in out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--older-than", "30"], "--older-than: '30' is not a duration"),
        (["--older-than", "a month"], "--older-than: 'a month' is not a duration"),
        (["--older-than", "0d"], "--older-than: '0d' is not a duration: it must be longer than zero."),
        (["--older-than", "30d", "--batch-size", "0"], "--batch-size: must be from 1 to 100000, got 0."),
        (["--older-than", "30d", "--batch-size", "many"], "argument --batch-size: invalid int value: 'many'"),
        (["--older-than", "30d", "--agent-id", "agent-7"], "--agent-id: 'agent-7' is not a UUID."),
        (["--older-than", "30d", "--status", "done"], "argument --status: invalid choice: 'done'"),
        ([], "the following arguments are required: --older-than"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(arguments, message):
    ids = many(1)
    age(ids, days=400)
    with pytest.raises(CommandError) as raised:
        call_command("cleanup_sessions", *arguments, stdout=StringIO())
    assert message in str(raised.value)
    assert Session.objects.filter(pk__in=ids).exists()


def test_bad_arguments_exit_non_zero_from_the_command_line():
    process = subprocess.run(
        [sys.executable, "manage.py", "cleanup_sessions", "--older-than", "30 days"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode != 0
    assert "--older-than: '30 days' is not a duration" in process.stderr
