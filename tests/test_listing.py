"""GET /sessions/: filters, order, cursor paging, indexes, and query counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sessions_app.filters import SessionFilterSet
from sessions_app.models import Session

from .conftest import AGENT, create

pytestmark = pytest.mark.django_db

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def make(n: int, **fields) -> list[Session]:
    """n sessions, one minute apart, oldest first."""
    start = fields.pop("start", BASE)
    rows = [
        Session(
            agent_id=fields.get("agent_id", AGENT),
            session_type=fields.get("session_type", "task"),
            status=fields.get("status", "active"),
            runtime_backend=fields.get("runtime_backend", "unknown"),
            created_at=start + timedelta(minutes=i),
            updated_at=start + timedelta(minutes=i, seconds=30),
        )
        for i in range(n)
    ]
    return Session.objects.bulk_create(rows)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [s["id"] for s in response.json()["results"]]


def test_lists_newest_first_with_a_default_and_a_maximum_limit(api, settings):
    settings.PAGE_SIZE_DEFAULT = 5
    settings.PAGE_SIZE_MAX = 8
    rows = make(12)
    assert ids(api.get("/sessions/")) == [str(s.id) for s in reversed(rows)][:5]
    assert len(ids(api.get("/sessions/?limit=100"))) == 8


def test_filters_by_agent(api):
    mine = make(3)
    make(2, agent_id=uuid.uuid4())
    assert ids(api.get(f"/sessions/?agent_id={AGENT}")) == [str(s.id) for s in reversed(mine)]


def test_filters_by_one_or_several_statuses(api):
    make(2, status="active")
    paused = make(2, status="paused", start=BASE + timedelta(hours=1))
    crashed = make(1, status="crashed", start=BASE + timedelta(hours=2))
    assert set(ids(api.get("/sessions/?status=paused"))) == {str(s.id) for s in paused}
    both = set(ids(api.get("/sessions/?status=paused&status=crashed")))
    assert both == {str(s.id) for s in paused + crashed}


def test_filters_by_type_backend_and_parent(api):
    make(2, session_type="task")
    conv = make(2, session_type="conversation", runtime_backend="kubernetes")
    assert set(ids(api.get("/sessions/?session_type=conversation"))) == {str(s.id) for s in conv}
    assert set(ids(api.get("/sessions/?runtime_backend=kubernetes"))) == {str(s.id) for s in conv}
    child = api.post(f"/sessions/{conv[0].id}/fork", {}, format="json").json()
    assert ids(api.get(f"/sessions/?parent_id={conv[0].id}")) == [child["id"]]


def test_filters_by_time_range_with_and_without_time_zone(api):
    rows = make(10)  # created 00:00 .. 00:09 UTC
    inside = api.get("/sessions/?created_after=2026-01-01T00:03:00&created_before=2026-01-01T00:06:00Z")
    assert ids(inside) == [str(rows[i].id) for i in (5, 4, 3)]
    shifted = api.get("/sessions/", {"created_after": "2026-01-01T01:08:00+01:00"})
    assert ids(shifted) == [str(rows[9].id), str(rows[8].id)]
    updated = api.get("/sessions/?updated_after=2026-01-01T00:08:00Z&updated_before=2026-01-01T00:09:00Z")
    assert ids(updated) == [str(rows[8].id)]


def test_filters_combine(api):
    make(3, status="active", session_type="task")
    target = make(2, status="paused", session_type="batch", start=BASE + timedelta(hours=1))
    make(2, status="paused", session_type="task", start=BASE + timedelta(hours=2))
    response = api.get(f"/sessions/?status=paused&session_type=batch&agent_id={AGENT}&created_after=2026-01-01")
    assert set(ids(response)) == {str(s.id) for s in target}


@pytest.mark.parametrize("ordering", ["created_at", "-created_at", "updated_at", "-updated_at"])
def test_orders_as_asked(api, ordering):
    rows = make(4)
    Session.objects.filter(pk=rows[0].pk).update(updated_at=BASE + timedelta(days=1))
    field = ordering.lstrip("-")
    expected = sorted(Session.objects.all(), key=lambda s: getattr(s, field), reverse=ordering.startswith("-"))
    assert ids(api.get(f"/sessions/?ordering={ordering}")) == [str(s.id) for s in expected]


def test_cursor_paging_walks_every_session_once_while_new_ones_arrive(api):
    rows = make(25)
    seen: list[str] = []
    url = "/sessions/?limit=10"
    pages = 0
    while url:
        response = api.get(url)
        seen += ids(response)
        create(api)  # a new session arrives between pages
        url = response.json()["next"]
        pages += 1
        assert pages < 10
    originals = [str(s.id) for s in reversed(rows)]
    assert [i for i in seen if i in set(originals)] == originals
    assert len(seen) == len(set(seen))


def test_paging_sessions_created_in_the_same_instant(api):
    now = datetime.now(UTC)
    Session.objects.bulk_create(Session(agent_id=AGENT, session_type="t", created_at=now) for _ in range(7))
    seen, url = [], "/sessions/?limit=3"
    while url:
        response = api.get(url)
        seen += ids(response)
        url = response.json()["next"]
    assert len(seen) == 7 == len(set(seen))


def test_the_previous_link_goes_back(api):
    make(6)
    first = api.get("/sessions/?limit=3").json()
    second = api.get(first["next"]).json()
    assert second["previous"]
    back = api.get(second["previous"]).json()
    assert [s["id"] for s in back["results"]] == [s["id"] for s in first["results"]]


def test_a_list_page_is_one_query_without_count(api):
    make(30)
    with CaptureQueriesContext(connection) as queries:
        assert len(ids(api.get(f"/sessions/?agent_id={AGENT}&status=active&limit=20"))) == 20
    assert len(queries) == 1
    assert "COUNT(" not in queries[0]["sql"].upper()


def test_the_filterset_directly(db):
    rows = make(3, status="crashed")
    make(2)
    qs = SessionFilterSet({"status": ["crashed"]}, queryset=Session.objects.all()).qs
    assert set(qs) == set(rows)
    assert not SessionFilterSet({"status": ["nope"]}, queryset=Session.objects.all()).is_valid()


# --- Index use ----------------------------------------------------------------

QUERIES = [
    "",
    f"agent_id={AGENT}",
    "status=crashed",
    "status=active&status=paused",
    "session_type=batch",
    "runtime_backend=kubernetes",
    f"parent_id={uuid.uuid4()}",
    "created_after=2026-03-01T00:00:00Z",
    "created_before=2026-01-02T00:00:00Z",
    "updated_after=2026-03-01T00:00:00Z",
    "updated_before=2026-01-02T00:00:00Z",
    "ordering=updated_at",
    "ordering=-updated_at",
    "ordering=created_at",
    f"agent_id={AGENT}&ordering=-updated_at",
    f"agent_id={AGENT}&status=crashed",
]


def fill_big_table() -> None:
    """Enough rows, spread over agents, types, statuses and time, that the planner must use indexes."""
    statuses = ["active", "paused", "completed", "completed", "completed", "crashed"]
    backends = ["local", "kubernetes", "unknown"]
    types = ["task", "conversation", "development", "batch"]
    agents = [uuid.uuid4() for _ in range(200)] + [uuid.UUID(AGENT)]
    rows = [
        Session(
            agent_id=agents[i % len(agents)],
            session_type=types[i % 4],
            status=statuses[i % 6],
            runtime_backend=backends[i % 3],
            created_at=BASE + timedelta(minutes=i),
            updated_at=BASE + timedelta(minutes=i, seconds=5),
            last_activity_at=BASE + timedelta(minutes=i),
        )
        for i in range(40_000)
    ]
    Session.objects.bulk_create(rows, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sessions_app_session")


def test_every_list_filter_is_served_by_an_index(api):
    """EXPLAIN the very query each list request runs: a full scan fails the test."""
    fill_big_table()
    for query in QUERIES:
        with CaptureQueriesContext(connection) as captured:
            response = api.get(f"/sessions/?limit=50&{query}")
        assert response.status_code == 200, query
        [select] = [q["sql"] for q in captured if "sessions_app_session" in q["sql"]]
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + select)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Seq Scan" not in plan, f"{query}:\n{plan}"
        assert "Index" in plan, f"{query}:\n{plan}"
