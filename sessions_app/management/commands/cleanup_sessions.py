"""Delete old sessions with their checkpoint history, in short batches.

    python manage.py cleanup_sessions --older-than 30d --dry-run
    python manage.py cleanup_sessions --older-than 30d
    python manage.py cleanup_sessions --older-than 7d --status crashed --status completed --batch-size 500

Each batch is one short transaction, so the API keeps answering. Every deleted
session publishes session.deleted (as DELETE /sessions/{id} does) after its
batch commits.
"""

from __future__ import annotations

import uuid

from django.core.management.base import BaseCommand, CommandError

from sessions_app.maintenance import CleanupResult, cleanup_sessions
from sessions_app.management.options import duration_option
from sessions_app.models import Session

BAR_WIDTH = 30


class Command(BaseCommand):
    help = "Delete sessions (completed by default) last updated longer ago than --older-than, in batches."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than", required=True, help="Last updated longer ago than this, such as 30d, 12h, 90m."
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=Session.Status.values,
            dest="statuses",
            help="Delete sessions with this status (repeatable; default: completed).",
        )
        parser.add_argument("--agent-id", help="Only sessions of this agent.")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Sessions deleted per transaction (default 1000)."
        )

    def handle(
        self,
        *args,
        older_than: str,
        statuses: list[str] | None,
        agent_id: str | None,
        dry_run: bool,
        batch_size: int,
        **options,
    ) -> None:
        age = duration_option("--older-than", older_than)
        if agent_id is not None:
            try:
                agent_id = str(uuid.UUID(agent_id))
            except ValueError:
                raise CommandError(f"--agent-id: {agent_id!r} is not a UUID.") from None
        if not 1 <= batch_size <= 100_000:
            raise CommandError(f"--batch-size: must be from 1 to 100000, got {batch_size}.")
        statuses = sorted(set(statuses or [Session.Status.COMPLETED]))

        self.tty = self.stdout.isatty()
        result = cleanup_sessions(
            age,
            statuses=statuses,
            agent_id=agent_id,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=self._progress,
        )
        if self.tty and result.batches:
            self.stdout.write("")  # end the progress bar's line
        self.stdout.write(self._summary(result, older_than, agent_id))

    def _progress(self, done: int, total: int) -> None:
        if self.tty:
            filled = BAR_WIDTH * done // total if total else BAR_WIDTH
            percent = 100 * done // total if total else 100
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stdout.write(f"\r[{bar}] {done}/{total} sessions ({percent}%)", ending="")
            self.stdout.flush()
        else:
            self.stdout.write(f"Deleted {done} of {total} session(s)")

    def _summary(self, result: CleanupResult, older_than: str, agent_id: str | None) -> str:
        which = "/".join(result.statuses)
        scope = f" of agent {agent_id}" if agent_id else ""
        cutoff = result.cutoff.isoformat(timespec="seconds")
        by_status = ", ".join(f"{status}: {n}" for status, n in sorted(result.by_status.items()))
        detail = f" ({by_status})" if by_status else ""
        if result.dry_run:
            return (
                f"Dry run: would delete {result.sessions} {which} session(s){scope}{detail} last updated "
                f"before {cutoff} ({older_than} ago), with {result.checkpoints} checkpoint(s). Nothing was deleted."
            )
        return (
            f"Deleted {result.sessions} {which} session(s){scope}{detail} last updated before {cutoff} "
            f"({older_than} ago), with {result.checkpoints} checkpoint(s), in {result.batches} batch(es) "
            f"and {result.seconds:.1f}s."
        )
