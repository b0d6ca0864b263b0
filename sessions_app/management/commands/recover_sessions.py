"""Recover crashed sessions from the command line (as POST /sessions/recover does, until none is left).

python manage.py recover_sessions --dry-run
python manage.py recover_sessions --agent-id 550e8400-e29b-41d4-a716-446655440000
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sessions_app.recovery import recover_crashed_sessions


class Command(BaseCommand):
    help = "Recover crashed sessions (oldest first) that have recovery attempts left; print what was done."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--agent-id", help="Only sessions of this agent.")
        parser.add_argument("--dry-run", action="store_true", help="Only list the sessions that would be recovered.")
        parser.add_argument("--limit", type=int, help="Recover at most this many sessions.")

    def handle(self, *args, agent_id: str | None, dry_run: bool, limit: int | None, **options) -> None:
        if agent_id is not None:
            try:
                agent_id = str(uuid.UUID(agent_id))
            except ValueError:
                raise CommandError(f"--agent-id: {agent_id!r} is not a UUID.") from None
        if limit is not None and limit < 1:
            raise CommandError("--limit: must be at least 1.")

        run = recover_crashed_sessions(agent_id=agent_id, dry_run=dry_run, limit=limit)
        verb = "Would recover" if dry_run else "Recovered"
        maximum = settings.MAX_RECOVERY_ATTEMPTS
        for session in run.sessions:
            attempt = session.recovery_attempts + (1 if dry_run else 0)
            prompt = session.checkpoint.get("resume_prompt") if isinstance(session.checkpoint, dict) else None
            resume = f": resume with {prompt!r}" if prompt else ": no resume_prompt in its checkpoint"
            self.stdout.write(
                f"{verb} {session.pk} (agent {session.agent_id}, {session.session_type}, "
                f"attempt {attempt} of {maximum}){resume}"
            )
        summary = f"{verb} {len(run.sessions)} session(s)."
        if run.exhausted:
            summary += f" {run.exhausted} crashed session(s) have used up their {maximum} recovery attempts."
        self.stdout.write(summary)
