"""Deliver stored events that were not published when they happened.

    python manage.py relay_events            # runs until Ctrl-C or SIGTERM
    python manage.py relay_events --once     # deliver what is waiting, then exit

Events go out in sequence order. Two relays may run at once: an advisory lock
lets one publish at a time, so neither skips nor reorders events. Delivery is
at least once; consumers deduplicate by event_id.
"""

from __future__ import annotations

import threading

import redis
from django.core.management.base import BaseCommand, CommandError

from sessions_app import events
from sessions_app.management.options import duration_option
from sessions_app.management.stopping import stop_on_signals


class Command(BaseCommand):
    help = "Publish stored events that are not yet published to Redis, in order; --once makes one pass."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="Deliver what is waiting, then exit.")
        parser.add_argument("--batch-size", type=int, default=500, help="Events per batch (default 500).")
        parser.add_argument("--interval", default="1s", help="Wait between polls when idle (default 1s).")
        parser.add_argument(
            "--pause", type=float, default=0.0, help="Seconds to rest between batches, to spare Redis (default 0)."
        )

    def handle(self, *args, once: bool, batch_size: int, interval: str, pause: float, **options) -> None:
        if pause < 0:
            raise CommandError("--pause: must not be negative.")
        if batch_size < 1:
            raise CommandError("--batch-size: must be at least 1.")
        idle = duration_option("--interval", interval).total_seconds()
        if not events.publisher.configured:
            raise CommandError("REDIS_URL is not set: there is nowhere to publish events.")

        def report(sent: int) -> None:
            if options["verbosity"] >= 2 or not once:
                self.stdout.write(f"Published {sent} event(s).")
                self.stdout.flush()

        stop = threading.Event()
        restore = stop_on_signals(stop)
        waiting = events.unpublished_count()
        if not once:
            self.stdout.write(f"Relaying events to Redis; {waiting} waiting. Ctrl-C or SIGTERM stops.")
            self.stdout.flush()
        try:
            total = events.run_relay(
                stop=stop, batch_size=batch_size, idle_seconds=idle, once=once, report=report, pause=pause
            )
        except (redis.RedisError, OSError) as exc:
            raise CommandError(f"Redis refused the events: {exc}") from None
        finally:
            restore()
        left = events.unpublished_count()
        self.stdout.write(f"Published {total} event(s); {left} still unpublished.")
