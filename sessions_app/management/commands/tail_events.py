"""Print session events as they happen.

    python manage.py tail_events
    python manage.py tail_events --agent-id 550e8400-e29b-41d4-a716-446655440000 --json
    python manage.py tail_events --session <id> --from-sequence 1200

Reads the event store in sequence order and uses the Redis channel only as a
wake-up call, so replaying from --from-sequence and then following live
events leaves neither a gap nor a duplicate at the seam.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from sessions_app.management.stopping import stop_on_signals
from sessions_app.models import Event


def describe(event: Event) -> str:
    """One readable line: time, sequence, type, session, and what changed."""
    payload = event.payload or {}
    if event.event_type == "session.updated":
        changes = f"status={payload.get('status')}"
        if payload.get("previous_status"):
            changes = f"status {payload['previous_status']} -> {payload.get('status')}"
        detail = f"{changes} updates={','.join(payload.get('updates', []))}"
    elif event.event_type == "session.created":
        detail = f"type={payload.get('session_type')} backend={payload.get('runtime_backend')}"
        if payload.get("parent_id"):
            detail += f" parent={payload['parent_id']}"
    elif event.event_type == "session.deleted":
        detail = f"last status={payload.get('status')}"
    elif event.event_type == "session.recovered":
        detail = f"attempts={payload.get('recovery_attempts')}"
        if payload.get("resume_prompt"):
            detail += f" resume_prompt={payload['resume_prompt']!r}"
    else:
        detail = json.dumps(payload, default=str)
    when = event.occurred_at.strftime("%Y-%m-%d %H:%M:%S")
    agent = payload.get("agent_id")
    return f"{when}  #{event.sequence:<8} {event.event_type:<18} {event.aggregate_id}  agent={agent}  {detail}"


class Command(BaseCommand):
    help = "Print session events as they happen (readable, or JSON lines with --json)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--agent-id", help="Only this agent's sessions.")
        parser.add_argument("--session", help="Only this session.")
        parser.add_argument("--from-sequence", type=int, help="First replay stored events from this sequence on.")
        parser.add_argument("--json", action="store_true", help="One JSON object per line, as published.")
        parser.add_argument("--count", type=int, help="Exit after this many events.")
        parser.add_argument("--no-follow", action="store_true", help="Print the stored events, then exit.")

    def handle(self, *args, **options) -> None:
        queryset = Event.objects.all()
        for option, field in (("agent_id", "agent_id"), ("session", "aggregate_id")):
            if options[option]:
                try:
                    queryset = queryset.filter(**{field: uuid.UUID(options[option])})
                except ValueError:
                    raise CommandError(f"--{option.replace('_', '-')}: {options[option]!r} is not a UUID.") from None
        start = options["from_sequence"]
        if start is not None and start < 1:
            raise CommandError("--from-sequence: must be at least 1.")
        if options["count"] is not None and options["count"] < 1:
            raise CommandError("--count: must be at least 1.")
        if start is None:
            last = Event.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
        else:
            last = start - 1

        stop = threading.Event()
        restore = stop_on_signals(stop)
        wakeup = self._subscribe()
        try:
            self._follow(queryset, last, options, stop, wakeup)
        except BrokenPipeError:  # `tail_events | head`: the reader has gone, so stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        finally:
            restore()
            if wakeup is not None:
                wakeup.close()

    def _follow(self, queryset, last: int, options, stop: threading.Event, wakeup) -> None:
        printed = 0
        while not stop.is_set():
            close_old_connections()
            batch = list(queryset.filter(sequence__gt=last).order_by("sequence")[:500])
            for event in batch:
                line = json.dumps(event.message(), default=str) if options["json"] else describe(event)
                self.stdout.write(line)
                last = event.sequence
                printed += 1
                if options["count"] and printed >= options["count"]:
                    return
            self.stdout.flush()
            if len(batch) == 500:
                continue
            if options["no_follow"]:
                return
            self._wait(wakeup, stop)

    def _subscribe(self):
        """Subscribe to events:session to wake up at once; without Redis, poll."""
        if not settings.REDIS_URL:
            return None
        try:
            pubsub = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1.0).pubsub()
            pubsub.subscribe(settings.EVENTS_CHANNEL)
            return pubsub
        except (redis.RedisError, OSError):
            return None

    @staticmethod
    def _wait(wakeup, stop: threading.Event) -> None:
        if wakeup is None:
            stop.wait(0.5)
            return
        try:
            wakeup.get_message(timeout=1.0)
        except (redis.RedisError, OSError):
            stop.wait(0.5)
