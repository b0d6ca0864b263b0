"""The fleet at a glance, for the admin index: a few queries, none reading the whole table.

1. Active, paused and crashed sessions, and the crashed ones waiting for
   recovery: one GROUP BY status over the (status, created_at) index. These
   stay few whatever the size of the table.
2. All sessions: counted up to ``COUNT_LIMIT``, PostgreSQL's estimate beyond
   (``bounded_count``); completed ones are the rest, approximate with it.
3. The sessions that ended in the last ``DAYS`` days: how many, how many
   crashed, median and p95 duration (``percentile_cont`` on PostgreSQL, as in
   ``metrics``). ``metrics.session_metrics`` would also group by type and by
   creation day, which the dashboard does not show.
4. The chart: one ``UNION ALL`` of two GROUP BY day, sessions created per day
   (a range of the created_at index) and sessions ended per day and status.

Queries 3 and 4 bound ended sessions by ``updated_at`` too, which the
session_updated index serves: a session is written when it ends, so
``updated_at >= ended_at`` always holds.

Every figure carries the changelist URL that lists the sessions behind it.
The chart is drawn here as inline SVG geometry; the template only prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import connections
from django.db.models import CharField, Count, F, Q, QuerySet, Value
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone

from .metrics import DurationSeconds, PercentileCont, percentile_by_offset
from .models import Session

Status = Session.Status

# Days in the chart, and behind the crash rate and the durations.
DAYS = 14
# Rows counted before a count becomes PostgreSQL's estimate (here and in the admin's list).
COUNT_LIMIT = 10_000

CHART_WIDTH = 1000
CHART_HEIGHT = 250
_PLOT_LEFT, _PLOT_RIGHT, _PLOT_TOP, _PLOT_BOTTOM = 44, 8, 12, 40
SERIES = (
    ("created", "Created"),
    ("crashed", "Crashed"),
    ("completed", "Completed"),
)


@dataclass(frozen=True)
class Bar:
    series: str
    x: float
    y: float
    width: float
    height: float
    count: int
    title: str
    url: str


def changelist_url(**params: Any) -> str:
    base = reverse("admin:sessions_app_session_changelist")
    return f"{base}?{urlencode(params)}" if params else base


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def fleet_dashboard(now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    today = timezone.localdate(now)
    first_day = today - timedelta(days=DAYS - 1)
    since = _start_of(first_day)
    figures = _figures(since)
    return {**figures, "chart": _chart(first_day, today, since), "days": DAYS, "since": since}


def _figures(since: datetime) -> dict[str, Any]:
    maximum = settings.MAX_RECOVERY_ATTEMPTS
    # The statuses that stay few: counted exactly through the (status, created_at) index.
    few = (Status.ACTIVE, Status.PAUSED, Status.CRASHED)
    counted = {
        row["status"]: row
        for row in Session.objects.filter(status__in=few)
        .order_by()
        .values("status")
        .annotate(n=Count("*"), waiting=Count("pk", filter=Q(recovery_attempts__lt=maximum)))
    }
    counts = {value: counted.get(value, {}).get("n", 0) for value in few}
    # Completed sessions pile up: they are what is left of the total, which is
    # exact up to COUNT_LIMIT sessions and PostgreSQL's estimate beyond.
    total, exact = bounded_count(Session.objects.all(), COUNT_LIMIT)
    counts[Status.COMPLETED] = max(total - sum(counts.values()), 0)
    waiting = counted.get(Status.CRASHED, {}).get("waiting", 0)

    recent = Session.objects.filter(updated_at__gte=since, ended_at__gte=since, status__in=Session.ENDED).order_by()
    duration = DurationSeconds(F("ended_at"), F("created_at"))
    aggregates: dict[str, Any] = {"ended": Count("*"), "crashed": Count("pk", filter=Q(status=Status.CRASHED))}
    postgres = connections[recent.db].vendor == "postgresql"
    if postgres:
        aggregates["p50"] = PercentileCont(duration, 0.5)
        aggregates["p95"] = PercentileCont(duration, 0.95)
    row = recent.aggregate(**aggregates)
    if not postgres:  # SQLite (make run without DATABASE_URL): read the neighbours of the rank
        row["p50"] = percentile_by_offset(recent, duration, row["ended"], 0.5)
        row["p95"] = percentile_by_offset(recent, duration, row["ended"], 0.95)

    ended_recently = {"ended_at__gte": since.isoformat()}
    statuses = [
        {
            "value": value,
            "label": label,
            "count": counts[value],
            "approximate": not exact and value == Status.COMPLETED,
            "url": changelist_url(status__exact=value),
        }
        for value, label in Status.choices
    ]
    ended, crashed = row["ended"], row["crashed"]
    return {
        "total": {"count": total, "approximate": not exact, "url": changelist_url()},
        "statuses": statuses,
        "waiting": {"count": waiting, "url": changelist_url(recoverability="waiting")},
        "exhausted": {"count": counts[Status.CRASHED] - waiting, "url": changelist_url(recoverability="exhausted")},
        "crash_rate": {
            "rate": None if ended == 0 else crashed / ended,
            "text": "—" if ended == 0 else f"{crashed / ended:.1%}",
            "crashed": crashed,
            "ended": ended,
            "url": changelist_url(status__exact=Status.CRASHED, **ended_recently),
        },
        "median": {"seconds": row["p50"], "text": format_duration(row["p50"]), "url": changelist_url(**ended_recently)},
        "p95": {"seconds": row["p95"], "text": format_duration(row["p95"]), "url": changelist_url(**ended_recently)},
        "max_recovery_attempts": maximum,
    }


def _chart(first_day: date, today: date, since: datetime) -> dict[str, Any]:
    created = (
        Session.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(kind=Value("created", output_field=CharField()), n=Count("pk"))
        .order_by()
        .values_list("day", "kind", "n")
    )
    ended = (
        Session.objects.filter(updated_at__gte=since, ended_at__gte=since, status__in=Session.ENDED)
        .annotate(day=TruncDate("ended_at"))
        .values("day", "status")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("day", "status", "n")
    )
    counts: dict[tuple[date, str], int] = {}
    for day, kind, n in created.union(ended, all=True):
        counts[(day, kind)] = n

    days = [first_day + timedelta(days=i) for i in range((today - first_day).days + 1)]
    peak = max(counts.values(), default=0)
    top = _nice_ceiling(peak)
    plot_width = CHART_WIDTH - _PLOT_LEFT - _PLOT_RIGHT
    plot_height = CHART_HEIGHT - _PLOT_TOP - _PLOT_BOTTOM
    group = plot_width / len(days)
    bar_width = group * 0.8 / len(SERIES)
    baseline = _PLOT_TOP + plot_height

    bars: list[Bar] = []
    labels: list[dict[str, Any]] = []
    totals = {series: 0 for series, _ in SERIES}
    for i, day in enumerate(days):
        start, end = _start_of(day), _start_of(day + timedelta(days=1))
        urls = {
            "created": changelist_url(created_at__gte=start.isoformat(), created_at__lt=end.isoformat()),
            # created_at__lt bounds the index scan: a session that ended that day was created before its end.
            "crashed": changelist_url(
                status__exact=Status.CRASHED,
                ended_at__gte=start.isoformat(),
                ended_at__lt=end.isoformat(),
                created_at__lt=end.isoformat(),
            ),
            "completed": changelist_url(
                status__exact=Status.COMPLETED,
                ended_at__gte=start.isoformat(),
                ended_at__lt=end.isoformat(),
                created_at__lt=end.isoformat(),
            ),
        }
        x0 = _PLOT_LEFT + i * group + group * 0.1
        for j, (series, label) in enumerate(SERIES):
            n = counts.get((day, series), 0)
            totals[series] += n
            height = 0.0 if top == 0 else plot_height * n / top
            bars.append(
                Bar(
                    series=series,
                    x=round(x0 + j * bar_width, 2),
                    y=round(baseline - height, 2),
                    width=round(bar_width - 1, 2),
                    height=round(height, 2),
                    count=n,
                    title=f"{day:%a %d %b}: {n} {label.lower()}",
                    url=urls[series],
                )
            )
        labels.append({"x": round(_PLOT_LEFT + (i + 0.5) * group, 2), "text": f"{day:%d %b}", "weekday": f"{day:%a}"})

    grid = [
        {"y": round(baseline - plot_height * k / 4, 2), "value": round(top * k / 4)} for k in range(5) if top or k == 0
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": _PLOT_LEFT,
        "right": CHART_WIDTH - _PLOT_RIGHT,
        "baseline": baseline,
        "label_y": baseline + 16,
        "weekday_y": baseline + 30,
        "bars": [bar for bar in bars if bar.count],
        "labels": labels,
        "grid": grid,
        "series": [{"key": key, "label": label, "total": totals[key]} for key, label in SERIES],
        "first_day": first_day,
        "last_day": today,
    }


def _nice_ceiling(value: int) -> int:
    """Four times the smallest round step (1, 1.5, 2, 2.5, ... x 10^k) that reaches a quarter of ``value``.

    The four grid lines then fall on whole numbers.
    """
    if value <= 0:
        return 0
    quarter = value / 4
    magnitude = 10 ** math.floor(math.log10(quarter)) if quarter >= 1 else 1
    steps = (m * magnitude for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10))
    step = next(s for s in steps if s >= quarter and s == int(s))
    return 4 * int(step)


def bounded_count(queryset: QuerySet, limit: int) -> tuple[int, bool]:
    """Count at most ``limit`` rows; past that, PostgreSQL's estimate of the table. Answers (count, exact).

    ``SELECT COUNT(*) FROM (SELECT ... LIMIT n)`` stops after n rows, where a
    plain COUNT(*) reads every row of a large table. The estimate is only
    meaningful for an unfiltered queryset; without one, answers limit + 1.
    """
    bounded = queryset.order_by().values("pk")[: limit + 1].count()
    if bounded <= limit:
        return bounded, True
    estimate = estimated_rows(queryset) if not queryset.query.where else None
    return (estimate if estimate is not None and estimate > limit else limit + 1), False


def estimated_rows(queryset: QuerySet) -> int | None:
    """PostgreSQL's estimate of the rows of the queryset's table (kept by ANALYZE and autovacuum); None elsewhere."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table]
        )
        row = cursor.fetchone()
    if row is None or row[0] < 0:  # -1: never analysed
        return None
    return int(row[0])


def format_duration(seconds: float | None) -> str:
    """A duration a person reads at a glance: 45 s, 12 min, 3 h 05 min, 2 d 4 h."""
    if seconds is None:
        return "—"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
