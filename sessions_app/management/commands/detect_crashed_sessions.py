"""Mark active sessions without activity for too long as crashed (crash_reason heartbeat_timeout).

    python manage.py detect_crashed_sessions --stale-after 15m --once
    python manage.py detect_crashed_sessions --stale-after 15m --interval 60s

Without --once it checks every --interval until Ctrl-C or SIGTERM, and then
finishes the batch it is marking before it exits. Several copies may run at
once: each session is marked by exactly one of them.
"""

from __future__ import annotations

import threading

from django.core.management.base import BaseCommand, CommandError

from sessions_app.management.options import duration_option
from sessions_app.management.stopping import stop_on_signals
from sessions_app.models import Session
from sessions_app.recovery import DETECT_BATCH_SIZE, mark_stale_sessions_crashed, run_crash_detector


class Command(BaseCommand):
    help = "Mark active sessions with no activity for longer than --stale-after as crashed (heartbeat_timeout)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--stale-after", required=True, help="No activity for longer than this, such as 90s, 15m, 2h."
        )
        parser.add_argument("--once", action="store_true", help="Make one pass and exit.")
        parser.add_argument("--interval", default="60s", help="Time between passes without --once (default 60s).")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DETECT_BATCH_SIZE,
            help=f"Sessions marked per transaction (default {DETECT_BATCH_SIZE}).",
        )

    def handle(self, *args, stale_after: str, once: bool, interval: str, batch_size: int, **options) -> None:
        stale = duration_option("--stale-after", stale_after)
        every = duration_option("--interval", interval)
        if batch_size < 1:
            raise CommandError("--batch-size: must be at least 1.")
        verbose = options["verbosity"] >= 2

        if once:
            marked = mark_stale_sessions_crashed(stale, batch_size=batch_size)
            self._report(marked, stale_after, verbose, quiet_if_none=False)
            return

        stop = threading.Event()
        restore = stop_on_signals(stop)
        self.stdout.write(f"Checking every {interval} for active sessions idle for more than {stale_after}.")
        try:
            passes, total = run_crash_detector(
                stale,
                interval=every,
                stop=stop,
                batch_size=batch_size,
                report=lambda marked: self._report(marked, stale_after, verbose, quiet_if_none=not verbose),
            )
        finally:
            restore()
        self.stdout.write(f"Stopped after {passes} pass(es); marked {total} session(s) crashed.")

    def _report(self, marked: list[Session], stale_after: str, verbose: bool, *, quiet_if_none: bool) -> None:
        if verbose:
            for session in marked:
                self.stdout.write(
                    f"  {session.pk} (agent {session.agent_id}): last activity {session.last_activity_at}"
                )
        if marked or not quiet_if_none:
            self.stdout.write(f"Marked {len(marked)} session(s) crashed: no activity for more than {stale_after}.")
        self.stdout.flush()
