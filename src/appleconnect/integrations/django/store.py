"""``DjangoStore``: the integration's :class:`~appleconnect.integrations.SignInStore` over Django's
database. Sessions are Django's: ending a user's sessions changes the user's session hash."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from .._records import AppleAccount, CompletedSignIn, PendingSignIn
from .models import AppleIdentity, AppleNotificationSeen, AppleSignInRequest


def _key(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def account_of(identity: AppleIdentity) -> AppleAccount:
    """The :class:`AppleAccount` view of an :class:`AppleIdentity`."""
    return AppleAccount(
        sub=identity.sub,
        email=identity.email or None,
        is_private_email=identity.is_private_email,
        first_name=identity.first_name or None,
        last_name=identity.last_name or None,
        email_forwarding=identity.email_forwarding,
        encrypted_refresh_token=identity.encrypted_refresh_token or None,
    )


def end_sessions(user: Any) -> None:
    """Sign the user out everywhere: Django drops a session whose hash no longer matches the
    user's (it is derived from the password field, which an Apple-only user never uses)."""
    user.set_unusable_password()
    user.save(update_fields=["password"])


class DjangoStore:
    """Keeps sign-ins, identities and notification ids in Django's database."""

    def _put(self, kind: str, key: str, data: dict[str, Any], expires_at: float) -> None:
        # Expired requests go as new ones come: the table holds only the live ones (each /start
        # adds a row, so it would otherwise grow without bound).
        AppleSignInRequest.objects.filter(expires_at__lt=time.time()).delete()
        AppleSignInRequest.objects.create(
            kind=kind, key_hash=_key(key), data=data, expires_at=expires_at
        )

    def _take(self, kind: str, key: str) -> dict[str, Any] | None:
        with transaction.atomic():
            found = AppleSignInRequest.objects.filter(kind=kind, key_hash=_key(key)).first()
            if found is None:
                return None
            # Single use: only the request that deletes the row may go on.
            deleted, _ = AppleSignInRequest.objects.filter(pk=found.pk).delete()
        return dict(found.data) if deleted else None

    def put_pending(self, state: str, pending: PendingSignIn) -> None:
        self._put("pending", state, asdict(pending), pending.expires_at)

    def take_pending(self, state: str) -> PendingSignIn | None:
        data = self._take("pending", state)
        return PendingSignIn(**data) if data is not None else None

    def put_completed(self, token: str, completed: CompletedSignIn) -> None:
        self._put("completed", token, asdict(completed), completed.expires_at)

    def take_completed(self, token: str) -> CompletedSignIn | None:
        data = self._take("completed", token)
        return CompletedSignIn(**data) if data is not None else None

    def get_account(self, sub: str) -> AppleAccount | None:
        identity = AppleIdentity.objects.filter(sub=sub).first()
        return account_of(identity) if identity is not None else None

    def save_account(self, account: AppleAccount) -> None:
        with transaction.atomic():
            identity = AppleIdentity.objects.select_related("user").filter(sub=account.sub).first()
            if identity is None:
                identity = AppleIdentity(sub=account.sub, user=self._new_user(account))
            identity.email = account.email or ""
            identity.is_private_email = account.is_private_email
            identity.email_forwarding = account.email_forwarding
            identity.first_name = account.first_name or ""
            identity.last_name = account.last_name or ""
            identity.encrypted_refresh_token = account.encrypted_refresh_token or ""
            identity.save()

    @staticmethod
    def _new_user(account: AppleAccount) -> Any:
        user_model = get_user_model()
        fields = {f.name for f in user_model._meta.get_fields()}
        values: dict[str, Any] = {user_model.USERNAME_FIELD: f"apple.{account.sub}"[:150]}
        for name in ("email", "first_name", "last_name"):
            if name in fields and getattr(account, name):
                values[name] = getattr(account, name)
        user = user_model(**values)
        user.set_unusable_password()
        user.save()
        return user

    def delete_account(self, sub: str) -> None:
        identity = AppleIdentity.objects.select_related("user").filter(sub=sub).first()
        if identity is not None:
            identity.user.delete()  # the identity goes with it (CASCADE)

    def create_session(self, token_hash: str, sub: str, expires_at: float) -> None:
        """Django's own session is opened by the view (``login()``)."""

    def session_sub(self, token_hash: str, now: float) -> str | None:
        return None

    def end_session(self, token_hash: str) -> None:
        """Django's ``logout()`` ends a session."""

    def end_sessions_of(self, sub: str) -> None:
        identity = AppleIdentity.objects.select_related("user").filter(sub=sub).first()
        if identity is not None:
            end_sessions(identity.user)

    def first_time_seen(self, jti: str) -> bool:
        _, created = AppleNotificationSeen.objects.get_or_create(jti=jti[:255])
        return bool(created)
