"""Create the first admin user without a prompt, once; later runs leave it alone.

DJANGO_SUPERUSER_USERNAME=admin DJANGO_SUPERUSER_PASSWORD='a long passphrase' \\
DJANGO_SUPERUSER_EMAIL=ops@example.com python manage.py ensure_admin

The variables are the ones ``createsuperuser --noinput`` reads. An existing
user of that name is never changed (its password stays what it is), so the
command is safe to run on every deploy. The password goes through
AUTH_PASSWORD_VALIDATORS, as it would in the admin's own forms.
"""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction


def ensure_admin(username: str, password: str, email: str = "") -> bool:
    """Create superuser ``username`` unless a user of that name exists; answer whether it was created."""
    User = get_user_model()
    lookup = {User.USERNAME_FIELD: username}
    if User._default_manager.filter(**lookup).exists():
        return False
    candidate = User(**lookup, email=email)
    password_validation.validate_password(password, candidate)
    try:
        with transaction.atomic():
            User._default_manager.create_superuser(username=username, email=email, password=password)
    except IntegrityError:  # created concurrently by another deploy step
        return False
    return True


class Command(BaseCommand):
    help = (
        "Create a superuser from DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_PASSWORD and DJANGO_SUPERUSER_EMAIL "
        "when no user of that name exists (idempotent, never prompts)."
    )

    def handle(self, *args, **options) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "").strip()
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "").strip()
        if not username:
            raise CommandError("DJANGO_SUPERUSER_USERNAME is not set: name the admin user to create.")
        User = get_user_model()
        if User._default_manager.filter(**{User.USERNAME_FIELD: username}).exists():
            self.stdout.write(f"Admin user {username!r} already exists: left unchanged.")
            return
        if not password:
            raise CommandError(f"DJANGO_SUPERUSER_PASSWORD is not set: cannot create admin user {username!r}.")
        try:
            created = ensure_admin(username, password, email)
        except ValidationError as error:
            raise CommandError(f"DJANGO_SUPERUSER_PASSWORD is refused: {' '.join(error.messages)}") from None
        if created:
            self.stdout.write(f"Created admin user {username!r}.")
        else:
            self.stdout.write(f"Admin user {username!r} already exists: left unchanged.")
