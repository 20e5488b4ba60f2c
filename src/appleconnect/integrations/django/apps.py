"""The Django app of the Sign in with Apple integration."""

from __future__ import annotations

from django.apps import AppConfig


class AppleSignInConfig(AppConfig):
    """``appleconnect.integrations.django``, labelled ``appleconnect_apple``."""

    name = "appleconnect.integrations.django"
    label = "appleconnect_apple"
    verbose_name = "Sign in with Apple"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks
        from django.core.signals import setting_changed

        from .conf import check_encryption_key, forget

        checks.register(check_encryption_key)
        setting_changed.connect(forget, dispatch_uid="appleconnect_apple_sign_in")
