"""``AppleBackend``: authenticates the user whose Apple ``sub`` a verified sign-in proved."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import BaseBackend
from django.http import HttpRequest

from .models import AppleIdentity


class AppleBackend(BaseBackend):
    """``authenticate(request, apple_sub=...)``: only the integration's finish view calls it,
    after the id_token was verified and the browser checked."""

    def authenticate(
        self, request: HttpRequest | None, apple_sub: str | None = None, **_: Any
    ) -> Any:
        if not apple_sub:
            return None
        identity = AppleIdentity.objects.select_related("user").filter(sub=apple_sub).first()
        if identity is None or not identity.user.is_active:
            return None
        return identity.user

    def get_user(self, user_id: Any) -> Any:
        identity = AppleIdentity.objects.select_related("user").filter(user_id=user_id).first()
        return identity.user if identity is not None and identity.user.is_active else None
