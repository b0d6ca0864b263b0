"""The session admin through Django's test client: list, search, edit, actions, buttons, dashboard."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app import admin as session_admin
from sessions_app import lifecycle
from sessions_app.dashboard import fleet_dashboard
from sessions_app.models import Checkpoint, Event, Session

from .conftest import AGENT

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/sessions_app/session/"
XSS = "<script>alert(1)</script><b>bold</b>"


@pytest.fixture(autouse=True)
def plain_static_files(settings):
    # The admin pages name their CSS through {% static %}; the manifest storage
    # would need collectstatic first.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def make(**fields) -> Session:
    return lifecycle.create_session({"agent_id": AGENT, "session_type": "task", **fields})


def crashed(**fields) -> Session:
    return make(status="crashed", crash_reason="lost pod", **fields)


def change_url(session: Session) -> str:
    return f"{CHANGELIST}{session.pk}/change/"


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def listed_ids(response) -> list[str]:
    assert response.status_code == 200, response.content[:2000]
    return re.findall(r'<code title="([0-9a-f-]{36})">', response.content.decode())


def form_data(session: Session, **changes) -> dict:
    session.refresh_from_db()
    data = {
        "agent_id": str(session.agent_id),
        "session_type": session.session_type,
        "status": session.status,
        "crash_reason": session.crash_reason,
        "runtime_backend": session.runtime_backend,
        "context": json.dumps(session.context),
        "checkpoint": json.dumps(session.checkpoint),
        "runtime_metadata": json.dumps(session.runtime_metadata),
        "expected_version": session.version,
    }
    data.update(changes)
    return data


def run_action(client: Client, action: str, sessions, **extra):
    data = {"action": action, "_selected_action": [str(s.pk) for s in sessions], "index": "0", **extra}
    return client.post(CHANGELIST, data, follow=True)


def session_queries(captured) -> list[str]:
    return [q["sql"] for q in captured if '"sessions_app_session"' in q["sql"]]


# --- Finding sessions ----------------------------------------------------------------------


def test_the_list_shows_each_session_in_one_row_newest_first(admin_client):
    older = make(session_type="batch", runtime_backend="kubernetes")
    Session.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(hours=2))
    newer = crashed(session_type="conversation")

    response = admin_client.get(CHANGELIST)

    assert listed_ids(response) == [str(newer.pk), str(older.pk)]
    html = response.content.decode()
    assert f">{str(newer.pk)[:8]}</code>" in html
    assert f'href="?agent_id={AGENT}"' in html
    assert '<span class="session-badge session-badge-crashed">Crashed</span>' in html
    assert '<span class="session-badge session-badge-active">Active</span>' in html
    table = html[html.index('id="result_list"') :]
    head = table[: table.index("</thead>")]
    headers = re.findall(r'<div class="text">(?:<a [^>]*>|<span>)([^<]+)<', head)
    assert headers == ["Id", "Agent", "Type", "Status", "Backend", "Created", "Last activity", "Duration"]
    assert '<span class="running" title="Still running">' in html  # the active session's duration
    assert "kubernetes" in html and "conversation" in html


def test_filters_by_status_type_backend_date_and_recoverability(admin_client, settings):
    settings.MAX_RECOVERY_ATTEMPTS = 2
    active = make(session_type="batch", runtime_backend="local")
    waiting = crashed(session_type="conversation")
    exhausted = crashed()
    Session.objects.filter(pk=exhausted.pk).update(recovery_attempts=2)
    old = make(runtime_backend="kubernetes")
    Session.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))

    assert set(listed_ids(admin_client.get(CHANGELIST, {"status__exact": "crashed"}))) == {
        str(waiting.pk),
        str(exhausted.pk),
    }
    assert listed_ids(admin_client.get(CHANGELIST, {"session_type": "batch"})) == [str(active.pk)]
    assert listed_ids(admin_client.get(CHANGELIST, {"runtime_backend__exact": "kubernetes"})) == [str(old.pk)]
    week = {"created_at__gte": (timezone.now() - timedelta(days=7)).isoformat()}
    assert str(old.pk) not in listed_ids(admin_client.get(CHANGELIST, week))
    assert listed_ids(admin_client.get(CHANGELIST, {"recoverability": "waiting"})) == [str(waiting.pk)]
    assert listed_ids(admin_client.get(CHANGELIST, {"recoverability": "exhausted"})) == [str(exhausted.pk)]
    page = admin_client.get(CHANGELIST).content.decode()
    for choice in ("Waiting for recovery", "Exhausted (2 attempts used)", "?session_type=conversation"):
        assert choice in page


def test_the_type_filter_and_date_hierarchy_never_read_distinct_values(admin_client):
    make(session_type="batch")
    make(session_type="conversation")
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(CHANGELIST)
    html = response.content.decode()
    assert "?session_type=batch" in html and "?session_type=conversation" in html
    assert 'class="toplinks"' in html  # the date hierarchy is there
    assert not [sql for sql in session_queries(captured) if "DISTINCT" in sql.upper()]


def test_search_by_a_full_uuid_uses_the_id_and_agent_indexes_not_like(admin_client):
    agent = uuid.uuid4()
    one = make(agent_id=agent)
    two = make(agent_id=agent)
    other = make(context={"note": str(one.pk)})

    with CaptureQueriesContext(connection) as captured:
        by_id = listed_ids(admin_client.get(CHANGELIST, {"q": str(one.pk).upper()}))
    assert by_id == [str(one.pk)]  # not `other`, whose context names it
    assert not [sql for sql in session_queries(captured) if "LIKE" in sql.upper()]

    assert set(listed_ids(admin_client.get(CHANGELIST, {"q": str(agent)}))) == {str(one.pk), str(two.pk)}
    assert str(other.pk) not in by_id


def test_search_by_the_short_id_shown_in_the_list(admin_client):
    wanted = make()
    make()
    assert listed_ids(admin_client.get(CHANGELIST, {"q": str(wanted.pk)[:8]})) == [str(wanted.pk)]


def test_search_finds_text_inside_the_context_case_insensitively(admin_client):
    hit = make(context={"current_task": "Implement Steam Modal", "files": ["SteamModal.tsx"]})
    make(context={"current_task": "Review the API"})
    assert listed_ids(admin_client.get(CHANGELIST, {"q": "steam modal"})) == [str(hit.pk)]
    assert listed_ids(admin_client.get(CHANGELIST, {"q": "steammodal.tsx"})) == [str(hit.pk)]
    assert listed_ids(admin_client.get(CHANGELIST, {"q": "nothing like this"})) == []


def test_the_list_query_count_does_not_grow_with_the_rows(admin_client):
    for _ in range(3):
        crashed()

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url).status_code == 200
        return len(captured)

    few = {url: queries(url) for url in (CHANGELIST, f"{CHANGELIST}?status__exact=crashed", f"{CHANGELIST}?q=lost")}
    Session.objects.bulk_create(
        Session(agent_id=AGENT, session_type="task", status="crashed", context={"n": i}) for i in range(60)
    )
    many = {url: queries(url) for url in few}
    assert many == few
    assert max(few.values()) <= 12


def test_the_list_never_counts_the_whole_table(admin_client, monkeypatch):
    monkeypatch.setattr(session_admin, "COUNT_LIMIT", 5)
    Session.objects.bulk_create(Session(agent_id=AGENT, session_type="task") for _ in range(12))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sessions_app_session")

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(CHANGELIST)

    counts = [sql for sql in session_queries(captured) if "COUNT(" in sql.upper()]
    assert counts and all("LIMIT 6" in sql for sql in counts), counts
    html = response.content.decode()
    assert "about 12 sessions" in html  # PostgreSQL's estimate, read from pg_class
    filtered = admin_client.get(CHANGELIST, {"status__exact": "active"}).content.decode()
    assert "more than 5 sessions" in filtered
    assert "Select all matching sessions" in filtered


def test_an_ascending_sort_keeps_the_index_order(admin_client):
    first = make()
    second = make()
    Session.objects.filter(pk=first.pk).update(created_at=second.created_at)  # a tie on created_at
    with CaptureQueriesContext(connection) as captured:
        admin_client.get(CHANGELIST, {"o": "6"})  # created_at, ascending
    ordered = [sql for sql in session_queries(captured) if 'ORDER BY "sessions_app_session"."created_at"' in sql]
    assert ordered and all('"created_at" ASC, "sessions_app_session"."id" ASC' in sql for sql in ordered), ordered


# --- Reading and editing a session -------------------------------------------------------


def test_the_page_shows_json_indented_and_coloured(admin_client):
    session = make(
        context={"task": "modal", "files": ["a.ts"], "progress": 0.75, "done": False},
        checkpoint={"step": 3, "resume_prompt": "Continue"},
        runtime_metadata={"pod": None},
    )
    html = admin_client.get(change_url(session)).content.decode()
    assert '<pre class="json">' in html
    assert '<span class="json-key">&quot;task&quot;</span>: <span class="json-string">&quot;modal&quot;</span>' in html
    assert '\n  <span class="json-key">&quot;files&quot;</span>' in html  # indented by two
    assert '<span class="json-number">0.75</span>' in html
    assert '<span class="json-literal">false</span>' in html
    assert '<span class="json-literal">null</span>' in html
    assert "Edit as JSON" in html
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)  # nothing fetched from another site


def test_timestamps_version_and_recovery_figures_are_read_only(admin_client):
    session = crashed()
    html = admin_client.get(change_url(session)).content.decode()
    for field in (
        "id",
        "version",
        "recovery_attempts",
        "recovered_at",
        "ended_at",
        "last_heartbeat_at",
        "last_activity_at",
        "created_at",
        "updated_at",
        "parent",
    ):
        assert f'name="{field}"' not in html, field
    for field in ("agent_id", "session_type", "status", "context", "checkpoint", "runtime_metadata"):
        assert f'name="{field}"' in html, field

    tampered = form_data(session, version=99, recovery_attempts=7, created_at="2000-01-01 00:00:00")
    assert admin_client.post(change_url(session), tampered).status_code == 302
    session.refresh_from_db()
    assert (session.version, session.recovery_attempts) == (1, 0)
    assert session.created_at.year != 2000


def test_editing_the_context_goes_through_update_session(admin_client, admin_user):
    session = make(context={"step": 1})

    response = admin_client.post(change_url(session), form_data(session, context='{"step": 2, "note": "fixed"}'))

    assert response.status_code == 302
    session.refresh_from_db()
    assert session.context == {"step": 2, "note": "fixed"}
    assert session.version == 2
    event = Event.objects.filter(aggregate_id=session.pk, event_type="session.updated").get()
    assert event.payload["updates"] == ["context"]
    entry = LogEntry.objects.get(object_id=str(session.pk), action_flag=CHANGE)
    assert entry.user == admin_user
    assert "Edit context" in entry.get_change_message()


def test_editing_the_checkpoint_adds_it_to_the_history(admin_client):
    session = make(checkpoint={"step": 1})
    admin_client.post(change_url(session), form_data(session, checkpoint='{"step": 2}'))
    assert list(Checkpoint.objects.filter(session=session).values_list("number", "checkpoint")) == [
        (2, {"step": 2}),
        (1, {"step": 1}),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"step": 2,}', "Not valid JSON: Expecting property name enclosed in double quotes (line 1, column 12)."),
        ("[1, 2]", "Must be a JSON object ({…}), not a list."),
        ('"text"', "Must be a JSON object ({…}), not a string."),
        ("42", "Must be a JSON object ({…}), not a number."),
        ("null", "Must be a JSON object ({…}), not null."),
        ("", "Enter a JSON object: {} when there is nothing to store."),
    ],
)
def test_bad_json_is_refused_and_nothing_is_saved(admin_client, text, message):
    session = make(context={"step": 1})

    response = admin_client.post(change_url(session), form_data(session, context=text, session_type="changed"))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert '<details class="json-edit" open>' in response.content.decode()  # the editor is open on the error
    session.refresh_from_db()
    assert (session.context, session.session_type, session.version) == ({"step": 1}, "task", 1)
    assert not Event.objects.filter(aggregate_id=session.pk, event_type="session.updated").exists()
    assert not LogEntry.objects.filter(object_id=str(session.pk)).exists()


def test_a_status_move_the_rules_forbid_is_refused_on_the_form(admin_client):
    session = make(status="completed")

    response = admin_client.post(change_url(session), form_data(session, status="active", session_type="other"))

    assert response.status_code == 200
    assert "Cannot move a session from &#x27;completed&#x27; to &#x27;active&#x27;" in response.content.decode()
    session.refresh_from_db()
    assert (session.status, session.session_type, session.version) == ("completed", "task", 1)


def test_a_status_move_on_the_form_follows_the_rules_and_keeps_the_reason(admin_client):
    session = make()

    admin_client.post(change_url(session), form_data(session, status="crashed", crash_reason="OOM killed"))

    session.refresh_from_db()
    assert (session.status, session.crash_reason, session.version) == ("crashed", "OOM killed", 2)
    assert session.ended_at is not None
    event = Event.objects.get(aggregate_id=session.pk, event_type="session.updated")
    assert event.payload["previous_status"] == "active"
    assert event.payload["crash_reason"] == "OOM killed"


def test_a_crash_reason_without_a_crash_is_refused(admin_client):
    session = make()
    response = admin_client.post(change_url(session), form_data(session, crash_reason="why"))
    assert "A crash reason is kept only when the status is or becomes crashed." in response.content.decode()
    session.refresh_from_db()
    assert session.version == 1


def test_a_change_made_meanwhile_is_not_overwritten(admin_client):
    session = make(context={"step": 1})
    stale = form_data(session, context='{"step": "mine"}')
    lifecycle.update_session(session.pk, {"context": {"step": "theirs"}})

    response = admin_client.post(change_url(session), stale)

    assert "The session changed while you were editing it (version 1, now 2)" in response.content.decode()
    session.refresh_from_db()
    assert session.context == {"step": "theirs"}


def test_staff_who_may_only_view_see_the_json_without_an_editor(client, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_session", content_type__app_label="sessions_app"))
    client.force_login(viewer)
    session = crashed(context={"k": "v"})
    html = client.get(change_url(session)).content.decode()
    assert '<span class="json-key">&quot;k&quot;</span>' in html
    assert "<textarea" not in html
    assert "Recover</button>" not in html


def test_the_page_lists_the_checkpoint_history_and_the_events_newest_first(admin_client):
    session = make(checkpoint={"step": 1})
    for step in (2, 3):
        lifecycle.update_session(session.pk, {"checkpoint": {"step": step}})

    html = admin_client.get(change_url(session)).content.decode()

    history = html[html.index('id="checkpoint-history"') : html.index('id="session-events"')]
    assert [int(n) for n in re.findall(r'<tr id="checkpoint-(\d+)">', history)] == [3, 2, 1]
    assert history.count(">Restore</button>") == 2  # beside each older checkpoint; the newest is current
    assert f'action="{CHANGELIST}{session.pk}/checkpoints/1/restore/"' in history
    assert "csrfmiddlewaretoken" in history
    events = html[html.index('id="session-events"') :]
    types = re.findall(r'data-event-type="([a-z.]+)"', events)
    assert types == ["session.updated", "session.updated", "session.created"]


def test_a_context_holding_markup_is_shown_as_text(admin_client):
    session = make(session_type="task", context={"note": XSS}, checkpoint={"html": XSS})
    lifecycle.update_session(session.pk, {"runtime_metadata": {"x": XSS}})

    page = admin_client.get(change_url(session)).content.decode()
    assert "<script>alert(1)" not in page
    assert "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in page

    found = admin_client.get(CHANGELIST, {"q": "<script>alert(1)"})
    assert listed_ids(found) == [str(session.pk)]
    listing = found.content.decode()
    assert "<script>alert(1)" not in listing
    assert "&lt;script&gt;alert(1)" in listing  # the search term, echoed in the search box


def test_markup_in_a_listed_field_is_escaped(admin_client):
    make(session_type="<img src=x onerror=alert(1)>")
    listing = admin_client.get(CHANGELIST).content.decode()
    assert "<img src=x" not in listing
    assert "&lt;img src=x onerror=alert(1)&gt;" in listing


def test_sessions_are_not_added_in_the_admin(admin_client):
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


# --- Repairing: actions -------------------------------------------------------------------


def test_recover_action_recovers_crashed_sessions_and_reports_the_others(admin_client, admin_user):
    one, two = crashed(), crashed()
    active = make()

    response = run_action(admin_client, "recover_sessions", [one, two, active])

    shown = messages_of(response)
    assert "Recovered 2 sessions." in shown
    assert (
        f"Session {str(active.pk)[:8]} (active): The session is active: only crashed sessions are recovered. "
        "Nothing was changed." in shown
    )
    for session in (one, two):
        session.refresh_from_db()
        assert (session.status, session.recovery_attempts) == ("active", 1)
        assert Event.objects.filter(aggregate_id=session.pk, event_type="session.recovered").exists()
        entry = LogEntry.objects.get(object_id=str(session.pk))
        assert (entry.user, entry.action_flag) == (admin_user, CHANGE)
        assert entry.get_change_message() == "Recovered: recovery attempt 1 of 3."
    active.refresh_from_db()
    assert active.version == 1
    assert not LogEntry.objects.filter(object_id=str(active.pk)).exists()


def test_recover_action_refuses_a_session_out_of_attempts(admin_client, settings):
    settings.MAX_RECOVERY_ATTEMPTS = 1
    session = crashed()
    Session.objects.filter(pk=session.pk).update(recovery_attempts=1)
    shown = messages_of(run_action(admin_client, "recover_sessions", [session]))
    assert any("has used up its 1 recovery attempts" in m for m in shown)
    session.refresh_from_db()
    assert session.status == "crashed"


def test_mark_crashed_asks_for_a_reason_first(admin_client):
    session = make()

    response = run_action(admin_client, "mark_crashed", [session])

    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="reason"' in html
    assert f'<input type="hidden" name="_selected_action" value="{session.pk}">' in html
    assert 'name="apply"' in html
    session.refresh_from_db()
    assert session.status == "active"

    blank = admin_client.post(
        CHANGELIST, {"action": "mark_crashed", "_selected_action": [str(session.pk)], "apply": "1", "reason": ""}
    )
    assert "This field is required." in blank.content.decode()
    session.refresh_from_db()
    assert session.status == "active"


def test_mark_crashed_with_a_reason_moves_what_the_rules_allow(admin_client, admin_user):
    active, paused, done, already = make(), make(status="paused"), make(status="completed"), crashed()

    response = admin_client.post(
        CHANGELIST,
        {
            "action": "mark_crashed",
            "_selected_action": [str(s.pk) for s in (active, paused, done, already)],
            "apply": "1",
            "reason": "node drained",
        },
        follow=True,
    )

    shown = messages_of(response)
    assert "Marked crashed 2 sessions." in shown
    assert f"1 was already crashed: {str(already.pk)[:8]}" in shown
    assert any(m.startswith(f"Session {str(done.pk)[:8]} (completed): Cannot move a session") for m in shown)
    for session in (active, paused):
        session.refresh_from_db()
        assert (session.status, session.crash_reason) == ("crashed", "node drained")
        entry = LogEntry.objects.get(object_id=str(session.pk))
        assert entry.user == admin_user and entry.get_change_message() == "Marked crashed: node drained"
    done.refresh_from_db()
    already.refresh_from_db()
    assert (done.status, done.version) == ("completed", 1)
    assert (already.crash_reason, already.version) == ("lost pod", 1)


def test_mark_completed_ends_sessions_and_skips_completed_ones(admin_client):
    active, broken, done = make(), crashed(), make(status="completed")

    shown = messages_of(run_action(admin_client, "mark_completed", [active, broken, done]))

    assert "Marked completed 2 sessions." in shown
    assert f"1 was already completed: {str(done.pk)[:8]}" in shown
    for session in (active, broken):
        session.refresh_from_db()
        assert session.status == "completed" and session.ended_at is not None
    assert Event.objects.filter(event_type="session.updated", aggregate_id__in=[active.pk, broken.pk]).count() == 2


def test_delete_selected_confirms_then_deletes_through_the_domain(admin_client, admin_user):
    keep, gone = make(), make(checkpoint={"step": 1})

    confirm = run_action(admin_client, "delete_selected", [gone])
    assert "Are you sure you want to delete the selected session?" in confirm.content.decode()
    assert Session.objects.filter(pk=gone.pk).exists()

    response = admin_client.post(
        CHANGELIST,
        {"action": "delete_selected", "_selected_action": [str(gone.pk)], "post": "yes"},
        follow=True,
    )

    assert "Successfully deleted 1 session." in messages_of(response)
    assert not Session.objects.filter(pk=gone.pk).exists()
    assert not Checkpoint.objects.filter(session_id=gone.pk).exists()
    assert Session.objects.filter(pk=keep.pk).exists()
    deleted = Event.objects.get(aggregate_id=gone.pk, event_type="session.deleted")
    assert deleted.payload["agent_id"] == AGENT
    entry = LogEntry.objects.get(object_id=str(gone.pk))
    assert (entry.user, entry.action_flag) == (admin_user, DELETION)


def test_an_action_handles_a_bounded_run_of_sessions(admin_client, monkeypatch):
    monkeypatch.setattr(session_admin, "ACTION_LIMIT", 2)
    sessions = [crashed() for _ in range(3)]

    shown = messages_of(run_action(admin_client, "recover_sessions", sessions))

    assert "Recovered 2 sessions." in shown
    assert "Only the first 2 selected sessions were handled: run the action again for the others." in shown
    assert Session.objects.filter(status="crashed").count() == 1


def test_deleting_from_the_session_page_goes_through_the_domain(admin_client, admin_user):
    session = make()
    response = admin_client.post(f"{CHANGELIST}{session.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Session.objects.filter(pk=session.pk).exists()
    assert Event.objects.filter(aggregate_id=session.pk, event_type="session.deleted").exists()
    assert LogEntry.objects.get(object_id=str(session.pk)).action_flag == DELETION


@pytest.mark.django_db(transaction=True)
def test_each_action_publishes_its_events_after_commit(subscriber):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "x")
    client = Client()
    client.force_login(user)
    broken, doomed = crashed(), make()
    subscriber.events([broken.pk, doomed.pk], count=2)

    run_action(client, "recover_sessions", [broken])
    client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [str(doomed.pk)], "post": "yes"})

    recovered = [e["event_type"] for e in subscriber.events(broken.pk, count=3)]
    assert recovered == ["session.created", "session.updated", "session.recovered"]
    deleted = [e["event_type"] for e in subscriber.events(doomed.pk, count=2)]
    assert deleted == ["session.created", "session.deleted"]


# --- Repairing: the buttons on a session's page ---------------------------------------------


def test_the_recover_button_recovers_a_crashed_session(admin_client, admin_user):
    session = crashed()
    page = admin_client.get(change_url(session)).content.decode()
    assert f'action="{CHANGELIST}{session.pk}/recover/"' in page and "Recover</button>" in page

    response = admin_client.post(f"{CHANGELIST}{session.pk}/recover/", follow=True)

    assert response.redirect_chain[-1][0] == change_url(session)
    assert f"Session {str(session.pk)[:8]} is active again (recovery attempt 1 of 3)." in messages_of(response)
    session.refresh_from_db()
    assert session.status == "active"
    assert LogEntry.objects.get(object_id=str(session.pk)).user == admin_user
    assert "Recover</button>" not in response.content.decode()


def test_the_recover_button_refuses_a_session_that_is_not_crashed(admin_client):
    session = make()
    response = admin_client.post(f"{CHANGELIST}{session.pk}/recover/", follow=True)
    assert "Not recovered: The session is active: only crashed sessions are recovered." in messages_of(response)
    session.refresh_from_db()
    assert session.version == 1


def test_the_restore_button_makes_an_older_checkpoint_current(admin_client, admin_user):
    session = make(checkpoint={"step": 1})
    lifecycle.update_session(session.pk, {"checkpoint": {"step": 2}})

    response = admin_client.post(f"{CHANGELIST}{session.pk}/checkpoints/1/restore/", follow=True)

    assert "Checkpoint 1 is the current checkpoint again (version 3)." in messages_of(response)
    session.refresh_from_db()
    assert session.checkpoint == {"step": 1}
    assert list(Checkpoint.objects.filter(session=session).values_list("number", flat=True)) == [3, 2, 1]
    assert LogEntry.objects.get(object_id=str(session.pk)).get_change_message() == "Restored checkpoint 1."
    missing = admin_client.post(f"{CHANGELIST}{session.pk}/checkpoints/9/restore/", follow=True)
    assert "Not restored: Checkpoint 9 is not in this session's history." in messages_of(missing)


def test_the_buttons_change_nothing_on_get_or_without_a_csrf_token(admin_user):
    session = crashed()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.get(f"{CHANGELIST}{session.pk}/recover/").status_code == 405
    assert client.post(f"{CHANGELIST}{session.pk}/recover/").status_code == 403
    session.refresh_from_db()
    assert session.status == "crashed"


def test_the_buttons_need_the_change_permission(client, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_session", content_type__app_label="sessions_app"))
    client.force_login(viewer)
    session = crashed()
    assert client.post(f"{CHANGELIST}{session.pk}/recover/").status_code == 403
    session.refresh_from_db()
    assert session.status == "crashed"


# --- The dashboard --------------------------------------------------------------------------


def test_the_dashboard_shows_the_fleet_with_links_to_the_list(admin_client, settings):
    settings.MAX_RECOVERY_ATTEMPTS = 2
    for _ in range(3):
        make()
    make(status="paused")
    ok = make(status="completed")
    Session.objects.filter(pk=ok.pk).update(created_at=timezone.now() - timedelta(minutes=30))
    crashed()
    tired = crashed()
    Session.objects.filter(pk=tired.pk).update(recovery_attempts=2)

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get("/admin/")

    html = response.content.decode()
    cards = dict(re.findall(r'data-status="(\w+)"><span class="label">\w+</span><span class="figure">([^<]+)<', html))
    assert cards == {"active": "3", "paused": "1", "completed": "1", "crashed": "2"}
    assert f'href="{CHANGELIST}?status__exact=crashed"' in html
    assert f'href="{CHANGELIST}?recoverability=waiting" id="fleet-waiting"' in html
    waiting = re.search(r'id="fleet-waiting">.*?<span class="figure">(\d+)<', html).group(1)
    assert waiting == "1"
    assert re.search(r'id="fleet-crash-rate">.*?<span class="figure">66.7%<', html)  # 2 of 3 ended
    assert re.search(r'id="fleet-median">.*?<span class="figure">0 s<', html)
    assert '<svg class="fleet-chart"' in html
    bars = re.findall(r'data-series="(\w+)" data-count="(\d+)"', html)
    assert ("created", "7") in bars and ("crashed", "2") in bars and ("completed", "1") in bars
    assert "Sessions" in html  # the app list is still there
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)  # nothing fetched from another site
    assert len(session_queries(captured.captured_queries)) <= 5


def test_the_dashboard_figures(settings):
    settings.MAX_RECOVERY_ATTEMPTS = 3
    now = timezone.now()
    long_ago = make(status="completed")
    Session.objects.filter(pk=long_ago.pk).update(
        created_at=now - timedelta(days=40), ended_at=now - timedelta(days=39), updated_at=now - timedelta(days=39)
    )
    quick = make(status="completed")
    Session.objects.filter(pk=quick.pk).update(created_at=quick.ended_at - timedelta(minutes=10))
    slow = crashed()
    Session.objects.filter(pk=slow.pk).update(created_at=slow.ended_at - timedelta(hours=3))

    board = fleet_dashboard()

    assert board["total"]["count"] == 3 and not board["total"]["approximate"]
    assert board["crash_rate"]["text"] == "50.0%"  # of the two that ended within 14 days
    assert board["median"]["text"] == "1 h 35 min"
    assert board["waiting"]["count"] == 1
    assert len(board["chart"]["labels"]) == 14
    assert board["crash_rate"]["url"].startswith(f"{CHANGELIST}?status__exact=crashed&ended_at__gte=")


def test_the_dashboard_links_open_in_the_list(admin_client):
    today = crashed()
    board = fleet_dashboard()
    for url in (
        board["crash_rate"]["url"],
        board["median"]["url"],
        *(bar.url for bar in board["chart"]["bars"]),
    ):
        assert listed_ids(admin_client.get(url)) == [str(today.pk)], url


# --- Setting up --------------------------------------------------------------------------


def test_ensure_admin_creates_the_first_admin_once(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long passphrase 42")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "ops@example.com")
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "another long passphrase")
    call_command("ensure_admin", stdout=out)

    assert out.getvalue().splitlines() == [
        "Created admin user 'ops'.",
        "Admin user 'ops' already exists: left unchanged.",
    ]
    user = get_user_model().objects.get(username="ops")
    assert user.is_superuser and user.is_staff and user.email == "ops@example.com"
    assert user.check_password("a long passphrase 42")


def test_ensure_admin_fails_loudly_without_its_variables(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    with pytest.raises(CommandError, match="DJANGO_SUPERUSER_USERNAME is not set"):
        call_command("ensure_admin", stdout=StringIO())
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="DJANGO_SUPERUSER_PASSWORD is not set"):
        call_command("ensure_admin", stdout=StringIO())
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "admin")
    with pytest.raises(CommandError, match="refused: This password is too short"):
        call_command("ensure_admin", stdout=StringIO())
    assert not get_user_model().objects.filter(username="ops").exists()
