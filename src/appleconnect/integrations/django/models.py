"""The integration's tables: the ``sub`` → user mapping, sign-ins in progress, notifications
already applied."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AppleIdentity(models.Model):
    """A user's Apple ID as your app sees it: Apple's ``sub`` and what came with it.

    ``email`` and ``is_private_email`` come from the verified id_token of the latest sign-in, the
    names from the first one. ``email_forwarding`` is ``False`` after ``email-disabled``.
    ``encrypted_refresh_token`` is Apple's refresh token (what is revoked at Apple when the user is
    deleted), encrypted with ``APPLE_SIGN_IN["ENCRYPTION_KEY"]``; never the token itself.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="apple_identity"
    )
    sub = models.CharField(max_length=255, unique=True)
    email = models.CharField(max_length=254, blank=True, default="")
    is_private_email = models.BooleanField(default=False)
    email_forwarding = models.BooleanField(default=True)
    first_name = models.CharField(max_length=100, blank=True, default="")
    last_name = models.CharField(max_length=100, blank=True, default="")
    encrypted_refresh_token = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Apple ID {self.sub}"


class AppleSignInRequest(models.Model):
    """A sign-in in progress (``pending``, under its state) or verified and waiting for its
    browser (``completed``, under its one-time token); the key is stored as a SHA-256 hash."""

    kind = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    data = models.JSONField()
    expires_at = models.FloatField()


class AppleNotificationSeen(models.Model):
    """The ``jti`` of a notification already applied (Apple may deliver one more than once)."""

    jti = models.CharField(max_length=255, unique=True)
    seen_at = models.DateTimeField(auto_now_add=True)
