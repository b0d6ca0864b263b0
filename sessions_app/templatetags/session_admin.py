"""Template helpers of the session admin: coloured JSON, the date hierarchy, the dashboard.

Everything here renders on the server, with no script or style from another
site. The JSON colouriser escapes every token it emits: a context holding
``<script>`` is shown as text, never run.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time, timedelta
from typing import Any

from django import template
from django.db.models import Max, Min
from django.utils import formats, timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import capfirst

register = template.Library()

# Pretty JSON longer than this is cut (the editor below it still holds all of it).
JSON_DISPLAY_LIMIT = 100_000

_JSON_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*")(?P<colon>\s*:)?
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<literal>\b(?:true|false|null)\b)
    | (?P<punct>[{}\[\],:])
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def _span(css_class: str, text: str) -> str:
    return f'<span class="json-{css_class}">{escape(text)}</span>'


def json_html(value: Any, *, indent: int | None = 2) -> SafeString:
    """``value`` as indented JSON, each token in a ``<span class="json-...">``, all of it escaped."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=str)
    cut = len(text) > JSON_DISPLAY_LIMIT
    if cut:
        text = text[:JSON_DISPLAY_LIMIT]
    parts: list[str] = []
    for match in _JSON_TOKEN.finditer(text):
        kind = match.lastgroup
        if match.group("string") is not None:
            if match.group("colon") is not None:
                parts.append(_span("key", match.group("string")))
                parts.append(escape(match.group("colon")))
            else:
                parts.append(_span("string", match.group("string")))
        elif kind in ("number", "literal", "punct"):
            parts.append(_span(kind, match.group(kind)))
        else:
            parts.append(escape(match.group(0)))
    if cut:
        parts.append(_span("cut", f"\n… cut at {JSON_DISPLAY_LIMIT:,} characters; the editor holds all of it"))
    css = "json" if indent else "json json-inline"
    # Every piece above is escaped or one of our own span tags.
    return mark_safe(f'<pre class="{css}">{"".join(parts)}</pre>')


@register.filter(name="json_html")
def json_html_filter(value: Any) -> SafeString:
    return json_html(value)


@register.filter(name="json_inline")
def json_inline_filter(value: Any) -> SafeString:
    return json_html(value, indent=None)


# --- Date hierarchy -----------------------------------------------------------


@register.inclusion_tag("admin/date_hierarchy.html")
def session_date_hierarchy(cl) -> dict[str, Any]:
    """Django's date hierarchy without its SELECT DISTINCT over the whole table.

    The stock tag lists the years (months, days) that hold rows with a
    DISTINCT date_trunc(...) over the filtered rows, which reads all of them.
    This one reads the first and last creation date of the chosen year or
    month among all sessions (MIN and MAX: two probes of the created_at index,
    whatever the other filters or the search) and offers every year, month or
    day between them; some may hold nothing.
    """
    field = cl.date_hierarchy
    year_field, month_field, day_field = f"{field}__year", f"{field}__month", f"{field}__day"
    year, month, day = (cl.params.get(name) for name in (year_field, month_field, day_field))
    year, month, day = (_single(value) for value in (year, month, day))

    def link(filters: dict[str, Any]) -> str:
        return cl.get_query_string(filters, [f"{field}__"])

    if year and month and day:
        chosen = date(int(year), int(month), int(day))
        return {
            "show": True,
            "back": {"link": link({year_field: year, month_field: month}), "title": _month_title(chosen)},
            "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
        }

    first, last = _bounds(cl, field, year, month)
    if first is None or last is None:
        return {"show": False}
    if not year and first.year == last.year:
        year = str(first.year)
        if first.month == last.month:
            month = str(first.month)
    if year and month:
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        return {
            "show": True,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: d.day}),
                    "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT")),
                }
                for d in days
            ],
        }
    if year:
        return {
            "show": True,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {"link": link({year_field: year, month_field: m}), "title": _month_title(date(int(year), m, 1))}
                for m in range(first.month, last.month + 1)
            ],
        }
    return {
        "show": True,
        "back": None,
        "choices": [{"link": link({year_field: str(y)}), "title": str(y)} for y in range(first.year, last.year + 1)],
    }


def _bounds(cl, field: str, year: str | None, month: str | None) -> tuple[date | None, date | None]:
    """The first and last local date of ``field`` in the chosen year or month, over all rows."""
    queryset = cl.root_queryset.order_by()
    if year:
        start = date(int(year), int(month or 1), 1)
        if month:
            end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
        else:
            end = date(start.year + 1, 1, 1)
        queryset = queryset.filter(**{f"{field}__gte": _midnight(start), f"{field}__lt": _midnight(end)})
    bounds = queryset.aggregate(first=Min(field), last=Max(field))
    if bounds["first"] is None or bounds["last"] is None:
        return None, None
    return timezone.localtime(bounds["first"]).date(), timezone.localtime(bounds["last"]).date()


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _single(value: Any) -> str | None:
    # ChangeList.params holds lists for repeated parameters.
    if isinstance(value, list):
        return value[-1] if value else None
    return value


def _month_title(day: date) -> str:
    return capfirst(formats.date_format(day, "YEAR_MONTH_FORMAT"))


@register.filter
def thousands(value: Any) -> str:
    """1234567 as 1,234,567 (the project does not install django.contrib.humanize)."""
    return f"{value:,}" if isinstance(value, int) else str(value)


# --- Dashboard ----------------------------------------------------------------


@register.inclusion_tag("admin/sessions_app/dashboard.html", takes_context=True)
def session_dashboard(context) -> dict[str, Any]:
    """The fleet's state for the admin index; nothing for staff who may not view sessions."""
    from sessions_app.dashboard import fleet_dashboard

    request = context.get("request")
    if request is None or not request.user.has_perm("sessions_app.view_session"):
        return {"dashboard": None}
    return {"dashboard": fleet_dashboard()}
