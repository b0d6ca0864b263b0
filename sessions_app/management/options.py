"""Argument helpers shared by the management commands."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import CommandError

from sessions_app.durations import parse_duration


def duration_option(name: str, value: str) -> timedelta:
    """Parse a duration option (30s, 15m, 2h, 7d); a bad one ends the command with a message naming it."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise CommandError(f"{name}: {exc}") from None
