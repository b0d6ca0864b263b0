"""Session metrics, computed by the database: no session row is loaded into Python.

Three queries on PostgreSQL, whatever the number of sessions: one aggregate
(counts, durations with ``percentile_cont``, crash rate, recoveries), one
GROUP BY session_type and one GROUP BY day. SQLite has no ``percentile_cont``:
there each percentile is read with two ``ORDER BY ... LIMIT 2 OFFSET k``
queries and interpolated the way ``percentile_cont`` does.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import Aggregate, Avg, Count, F, FloatField, Func, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from .models import Session

PERCENTILES = {"p50": 0.5, "p95": 0.95}


class DurationSeconds(Func):
    """Seconds from ``start`` to ``end`` as a float, computed by the database."""

    output_field = FloatField()

    def __init__(self, end: Any, start: Any) -> None:
        super().__init__(end, start)

    def as_sql(self, compiler, connection, **extra_context):
        end, end_params = compiler.compile(self.source_expressions[0])
        start, start_params = compiler.compile(self.source_expressions[1])
        if connection.vendor == "postgresql":
            sql = f"EXTRACT(EPOCH FROM ({end} - {start}))::double precision"
        else:  # SQLite stores timestamps as ISO 8601 text
            sql = f"((julianday({end}) - julianday({start})) * 86400.0)"
        return sql, (*end_params, *start_params)


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "PERCENTILE_CONT"
    name = "PercentileCont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def _ended(queryset: QuerySet[Session]) -> QuerySet[Session]:
    return queryset.filter(status__in=Session.ENDED, ended_at__isnull=False)


def percentile_by_offset(queryset: QuerySet[Session], expression: Any, count: int, fraction: float) -> float | None:
    """percentile_cont for databases without it: read the two neighbours of the rank, interpolate."""
    if count == 0:
        return None
    position = fraction * (count - 1)
    low = math.floor(position)
    values = list(
        queryset.annotate(_value=expression).order_by("_value").values_list("_value", flat=True)[low : low + 2]
    )
    if len(values) == 1 or position == low:
        return float(values[0])
    return float(values[0]) + (float(values[1]) - float(values[0])) * (position - low)


def session_metrics(queryset: QuerySet[Session]) -> dict[str, Any]:
    """Everything GET /sessions/metrics/ answers, for the (already filtered) sessions."""
    queryset = queryset.order_by()  # an ordering would leak into GROUP BY
    vendor = connections[queryset.db].vendor
    maximum = settings.MAX_RECOVERY_ATTEMPTS
    ended = Q(status__in=Session.ENDED, ended_at__isnull=False)
    duration = DurationSeconds(F("ended_at"), F("created_at"))

    aggregates: dict[str, Any] = {
        "total": Count("pk"),
        "ended": Count("pk", filter=ended),
        "duration_mean": Avg(duration, filter=ended),
        "duration_max": Max(duration, filter=ended),
        "recovered_sessions": Count("pk", filter=Q(recovery_attempts__gt=0)),
        "attempts_sum": Sum("recovery_attempts", default=0),
        "exhausted": Count("pk", filter=Q(recovery_attempts__gte=maximum)),
        "awaiting_recovery": Count("pk", filter=Q(status=Session.Status.CRASHED, recovery_attempts__lt=maximum)),
    }
    for value in Session.Status.values:
        aggregates[f"status_{value}"] = Count("pk", filter=Q(status=value))
    for value in Session.RuntimeBackend.values:
        aggregates[f"backend_{value}"] = Count("pk", filter=Q(runtime_backend=value))
    if vendor == "postgresql":
        for name, fraction in PERCENTILES.items():
            aggregates[f"duration_{name}"] = PercentileCont(duration, fraction, filter=ended)
    row = queryset.aggregate(**aggregates)
    if vendor != "postgresql":
        for name, fraction in PERCENTILES.items():
            row[f"duration_{name}"] = percentile_by_offset(_ended(queryset), duration, row["ended"], fraction)

    by_type = queryset.values("session_type").annotate(count=Count("pk")).order_by("-count", "session_type")
    per_day = queryset.annotate(day=TruncDate("created_at")).values("day").annotate(count=Count("pk")).order_by("day")

    total, crashed = row["total"], row[f"status_{Session.Status.CRASHED}"]
    return {
        "total": total,
        "by_status": {value: row[f"status_{value}"] for value in Session.Status.values},
        "by_session_type": {item["session_type"]: item["count"] for item in by_type},
        "by_runtime_backend": {value: row[f"backend_{value}"] for value in Session.RuntimeBackend.values},
        "duration_seconds": {
            "count": row["ended"],
            "mean": _rounded(row["duration_mean"]),
            "p50": _rounded(row["duration_p50"]),
            "p95": _rounded(row["duration_p95"]),
            "max": _rounded(row["duration_max"]),
        },
        "crash_rate": {
            "crashed": crashed,
            "of_all": _ratio(crashed, total),
            "of_ended": _ratio(crashed, row["ended"]),
        },
        "recovery": {
            "recovered_sessions": row["recovered_sessions"],
            "total_attempts": row["attempts_sum"],
            "exhausted": row["exhausted"],
            "awaiting_recovery": row["awaiting_recovery"],
            "max_attempts": maximum,
        },
        "created_per_day": _with_empty_days({item["day"]: item["count"] for item in per_day}),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _with_empty_days(counts: dict[date, int]) -> list[dict[str, Any]]:
    """Every day from the first to the last day with a session, days without any as 0."""
    if not counts:
        return []
    first, last = min(counts), max(counts)
    days = (last - first).days + 1
    return [{"date": first + timedelta(days=n), "count": counts.get(first + timedelta(days=n), 0)} for n in range(days)]
