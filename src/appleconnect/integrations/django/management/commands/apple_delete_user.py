"""``python manage.py apple_delete_user USER``: revoke the user's Apple tokens, then delete them.

Apple requires apps that offer Sign in with Apple to revoke the user's tokens when the account is
deleted. USER is a username or a primary key. If Apple cannot be reached the user is kept and
the command fails, so that it can be run again.

Example: ``python manage.py apple_delete_user apple.001234.abcd.0456``
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from appleconnect import AppleConnectError
from appleconnect.integrations._crypto import EncryptionKeyError

from ...conf import apple_sign_in
from ...models import AppleIdentity


class Command(BaseCommand):
    help = (
        "Revoke a user's Sign in with Apple tokens at Apple, then delete the user. "
        "Example: manage.py apple_delete_user alice"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="username or primary key of the user to delete")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        ref = str(options["user"])
        user = user_model.objects.filter(**{user_model.USERNAME_FIELD: ref}).first()
        if user is None and ref.isdigit():
            user = user_model.objects.filter(pk=int(ref)).first()
        if user is None:
            raise CommandError(f"No user {ref!r}.")
        identity = AppleIdentity.objects.filter(user=user).first()
        if identity is None:
            user.delete()
            self.stdout.write(f"Deleted user {ref} (no Apple ID linked, nothing to revoke).")
            return
        try:
            apple_sign_in().delete_account(identity.sub)
        except AppleConnectError as exc:
            raise CommandError(f"Apple refused or could not be reached; user kept: {exc}") from exc
        except EncryptionKeyError as exc:
            raise CommandError(f"{exc} User kept.") from exc
        self.stdout.write(f"Revoked the Apple tokens of {ref} and deleted the user.")
