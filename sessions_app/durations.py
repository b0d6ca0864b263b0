"""Durations written the way operators type them: ``30s``, ``15m``, ``2h``, ``7d``.

Shared by the management commands (``--stale-after``, ``--interval``,
``--older-than``). A bare number is refused on purpose: ``--older-than 30``
could mean seconds or days, and a cleanup must never guess.
"""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A hundred years: beyond it "now - duration" would leave the calendar.
LONGEST = timedelta(days=36500)

_DURATION = re.compile(r"^\s*(\d{1,12})\s*([smhd])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """Turn ``15m`` into ``timedelta(minutes=15)``; raise ValueError with a clear message."""
    match = _DURATION.match(text or "")
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a whole number and a unit (s, m, h or d), such as 30s, 15m, 2h or 7d."
        )
    seconds = int(match.group(1)) * UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a duration: it must be longer than zero.")
    if seconds > LONGEST.total_seconds():
        raise ValueError(f"{text!r} is too long: at most {LONGEST.days}d.")
    return timedelta(seconds=seconds)
