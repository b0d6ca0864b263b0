"""Remove published events past their retention period; unpublished ones are never removed.

python manage.py cleanup_events                 # older than EVENT_RETENTION_DAYS (default 30d)
python manage.py cleanup_events --older-than 7d --dry-run
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from sessions_app.management.options import duration_option
from sessions_app.models import Event


def prune_events(cutoff, *, batch_size: int = 5000, dry_run: bool = False, progress=None) -> int:
    """Delete published events that occurred before ``cutoff`` in sequence-ordered batches."""
    old = Event.objects.filter(published_at__isnull=False, occurred_at__lt=cutoff)
    if dry_run:
        return old.count()
    removed = 0
    while True:
        with transaction.atomic():
            ids = list(old.order_by("sequence").values_list("sequence", flat=True)[:batch_size])
            if not ids:
                return removed
            removed += Event.objects.filter(sequence__in=ids)._raw_delete(Event.objects.db)
        if progress is not None:
            progress(removed)


class Command(BaseCommand):
    help = "Delete published events older than the retention period (unpublished events are kept)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than", default=None, help=f"Default {settings.EVENT_RETENTION_DAYS}d (EVENT_RETENTION_DAYS)."
        )
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--dry-run", action="store_true", help="Only count.")

    def handle(self, *args, older_than, batch_size: int, dry_run: bool, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size: must be at least 1.")
        age = duration_option("--older-than", older_than or f"{settings.EVENT_RETENTION_DAYS}d")
        cutoff = timezone.now() - age
        started = time.monotonic()
        removed = prune_events(
            cutoff,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=lambda n: self.stdout.write(f"  removed {n} event(s)"),
        )
        verb = "Would remove" if dry_run else "Removed"
        self.stdout.write(
            f"{verb} {removed} published event(s) older than {cutoff:%Y-%m-%d %H:%M} UTC "
            f"in {time.monotonic() - started:.1f}s."
        )
