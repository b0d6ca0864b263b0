"""GET /sessions/metrics/: counts, durations, crash rate, recoveries and days, computed by the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import F

from sessions_app.metrics import DurationSeconds, PercentileCont, percentile_by_offset
from sessions_app.models import Session

from .conftest import create, new_agent

DAY = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def session(api, *, created: datetime = DAY, lasted: float | None = None, **fields) -> dict:
    """A session created at ``created``; ``lasted`` seconds later it ended (give an ended status)."""
    body = create(api, **fields)
    timestamps = {"created_at": created}
    if lasted is not None:
        timestamps["ended_at"] = created + timedelta(seconds=lasted)
    Session.objects.filter(pk=body["id"]).update(**timestamps)
    return body


def metrics(api, **params) -> dict:
    response = api.get("/sessions/metrics/", params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.django_db
def test_metrics_count_sessions_by_status_type_and_backend(api):
    session(api, session_type="task", runtime_backend="local")
    session(api, session_type="task", runtime_backend="kubernetes", status="paused")
    session(api, session_type="batch", runtime_backend="kubernetes", status="completed", lasted=60)
    session(api, session_type="conversation", status="crashed", lasted=5)
    session(api, session_type="task", status="crashed", lasted=5)

    body = metrics(api)

    assert body["total"] == 5
    assert body["by_status"] == {"active": 1, "paused": 1, "completed": 1, "crashed": 2}
    assert body["by_session_type"] == {"task": 3, "batch": 1, "conversation": 1}
    assert list(body["by_session_type"]) == ["task", "batch", "conversation"]  # most first
    assert body["by_runtime_backend"] == {"local": 1, "kubernetes": 2, "unknown": 2}


@pytest.mark.django_db
def test_metrics_give_the_durations_of_ended_sessions_in_seconds(api):
    for seconds, status in [(10, "completed"), (20, "crashed"), (30, "completed"), (40, "completed"), (100, "crashed")]:
        session(api, status=status, lasted=seconds)
    session(api)  # still running: not measured

    assert metrics(api)["duration_seconds"] == {
        "count": 5,
        "mean": 40.0,
        "p50": 30.0,
        "p95": 88.0,  # percentile_cont: 40 + 0.8 * (100 - 40)
        "max": 100.0,
    }


@pytest.mark.django_db
def test_metrics_keep_sub_second_durations(api):
    session(api, status="completed", lasted=1.25)
    assert metrics(api)["duration_seconds"]["max"] == 1.25


@pytest.mark.django_db
def test_metrics_give_the_crash_rate_of_all_and_of_ended_sessions(api):
    session(api, status="crashed", lasted=1)
    session(api, status="completed", lasted=1)
    session(api, status="completed", lasted=1)
    session(api)

    assert metrics(api)["crash_rate"] == {"crashed": 1, "of_all": 0.25, "of_ended": 0.3333}


@pytest.mark.django_db
def test_metrics_count_recoveries(api):
    recovered_once = session(api, status="crashed", lasted=1)
    api.post(f"/sessions/{recovered_once['id']}/recover")
    exhausted = session(api, status="crashed", lasted=1)
    Session.objects.filter(pk=exhausted["id"]).update(recovery_attempts=3)
    session(api, status="crashed", lasted=1)  # waiting for its first recovery
    session(api)

    assert metrics(api)["recovery"] == {
        "recovered_sessions": 2,
        "total_attempts": 4,
        "exhausted": 1,
        "awaiting_recovery": 1,
        "max_attempts": 3,
    }


@pytest.mark.django_db
def test_metrics_count_sessions_created_per_day_including_days_without_any(api):
    session(api, created=DAY)
    session(api, created=DAY + timedelta(hours=3))
    session(api, created=DAY + timedelta(days=2))

    assert metrics(api)["created_per_day"] == [
        {"date": "2025-03-10", "count": 2},
        {"date": "2025-03-11", "count": 0},
        {"date": "2025-03-12", "count": 1},
    ]


@pytest.mark.django_db
def test_metrics_take_the_same_filters_as_the_list(api):
    agent = new_agent()
    session(api, agent_id=agent, created=DAY, status="completed", lasted=10)
    session(api, agent_id=agent, created=DAY + timedelta(days=1), status="crashed", lasted=20)
    session(api, agent_id=agent, created=DAY + timedelta(days=5))
    session(api, created=DAY, status="completed", lasted=1000)  # another agent

    body = metrics(api, agent_id=agent, created_after="2025-03-10T00:00:00Z", created_before="2025-03-12T00:00:00Z")

    assert body["total"] == 2
    assert body["by_status"] == {"active": 0, "paused": 0, "completed": 1, "crashed": 1}
    assert body["duration_seconds"]["max"] == 20.0
    assert body["created_per_day"] == [{"date": "2025-03-10", "count": 1}, {"date": "2025-03-11", "count": 1}]
    assert metrics(api, status=["crashed", "paused"])["total"] == 1
    assert metrics(api, recoverable="false")["total"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"status": "sleeping"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"agent_id": "agent-7"}, "agent_id"),
        ({"runtime_backend": "docker"}, "runtime_backend"),
        ({"recoverable": "maybe"}, "recoverable"),
    ],
)
def test_a_bad_filter_value_answers_400_naming_the_parameter(api, params, parameter):
    response = api.get("/sessions/metrics/", params)
    assert response.status_code == 400
    assert list(response.json()) == [parameter]


@pytest.mark.django_db
def test_metrics_of_no_sessions_are_zeros_and_nulls(api):
    assert metrics(api) == {
        "total": 0,
        "by_status": {"active": 0, "paused": 0, "completed": 0, "crashed": 0},
        "by_session_type": {},
        "by_runtime_backend": {"local": 0, "kubernetes": 0, "unknown": 0},
        "duration_seconds": {"count": 0, "mean": None, "p50": None, "p95": None, "max": None},
        "crash_rate": {"crashed": 0, "of_all": None, "of_ended": None},
        "recovery": {
            "recovered_sessions": 0,
            "total_attempts": 0,
            "exhausted": 0,
            "awaiting_recovery": 0,
            "max_attempts": 3,
        },
        "created_per_day": [],
    }


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/sessions/metrics", "/sessions/metrics/"])
def test_metrics_answer_with_and_without_a_trailing_slash(api, path):
    assert api.get(path).status_code == 200


@pytest.mark.django_db
def test_metrics_take_three_queries_however_many_sessions_there_are(api, django_assert_num_queries):
    for n in range(30):
        session(api, created=DAY + timedelta(days=n % 4), status="completed", lasted=n)
    with django_assert_num_queries(3):
        assert metrics(api)["total"] == 30


@pytest.mark.django_db
def test_the_percentile_fallback_for_other_databases_agrees_with_percentile_cont(api):
    for seconds in [3, 1, 4, 1, 5, 9, 2, 6]:
        session(api, status="completed", lasted=seconds)
    queryset = Session.objects.all()
    duration = DurationSeconds(F("ended_at"), F("created_at"))

    for fraction in (0, 0.25, 0.5, 0.9, 0.95, 1):
        expected = queryset.aggregate(p=PercentileCont(duration, fraction))["p"]
        assert percentile_by_offset(queryset, duration, 8, fraction) == pytest.approx(expected)
    assert percentile_by_offset(queryset.none(), duration, 0, 0.5) is None


@pytest.mark.django_db
def test_the_schema_documents_the_metrics_and_their_filters(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/sessions/metrics/"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"agent_id", "status", "created_after", "recoverable"}
    assert "limit" not in {p["name"] for p in operation["parameters"]}
    reference = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    metrics_schema = schema["components"]["schemas"][reference.rsplit("/", 1)[-1]]
    assert set(metrics_schema["properties"]) == {
        "total",
        "by_status",
        "by_session_type",
        "by_runtime_backend",
        "duration_seconds",
        "crash_rate",
        "recovery",
        "created_per_day",
    }
    assert "/sessions/recover/" in schema["paths"]
    assert "/sessions/{id}/recover/" in schema["paths"]
    assert "/sessions/{id}/heartbeat/" in schema["paths"]
