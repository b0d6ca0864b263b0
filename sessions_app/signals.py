"""Model signals turn every saved or deleted session into an event.

Receivers stay one line: the domain functions in ``lifecycle`` annotate the
instance with what changed (``_event_updates``, ``_previous_status``) and the
envelope is built in ``events``.
"""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import events
from .models import Session


@receiver(post_save, sender=Session, dispatch_uid="session_saved")
def session_saved(sender, instance: Session, created: bool, update_fields, raw: bool, **kwargs) -> None:
    if raw:
        return
    if created:
        events.record(events.session_created(instance))
        return
    updates = getattr(instance, "_event_updates", None)
    if updates is None:  # a save outside the domain functions: name what it wrote
        written = update_fields or Session.WRITABLE_FIELDS
        updates = [f for f in Session.WRITABLE_FIELDS if f in written]
    if updates:
        events.record(events.session_updated(instance, updates, getattr(instance, "_previous_status", None)))


@receiver(post_delete, sender=Session, dispatch_uid="session_deleted")
def session_deleted(sender, instance: Session, **kwargs) -> None:
    events.record(events.session_deleted(instance))
