"""The project's :class:`AppleSignIn`, built once from the ``APPLE_SIGN_IN`` setting.

``APPLE_SIGN_IN`` holds the same values as the environment variables of
:func:`~appleconnect.integrations.from_environ` without their ``APPLE_`` prefix (``TEAM_ID``,
``KEY_ID``, ``PRIVATE_KEY`` or ``PRIVATE_KEY_FILE``, ``SERVICES_ID``, ``APP_ID``,
``REDIRECT_URI``, ``BASE_URL``, ``INSECURE_COOKIES``), or ``CLIENT`` (an
:class:`~appleconnect.AppleClient`) with ``REDIRECT_URI``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from appleconnect import AppleClient

from .._flow import AppleSignIn, from_environ
from .store import DjangoStore


@functools.lru_cache(maxsize=1)
def apple_sign_in() -> AppleSignIn:
    """The :class:`AppleSignIn` of this project (rebuilt when the setting changes)."""
    conf: Any = getattr(settings, "APPLE_SIGN_IN", None)
    if not isinstance(conf, Mapping):
        raise ImproperlyConfigured("Set APPLE_SIGN_IN (see docs/integrations.md).")
    insecure = str(conf.get("INSECURE_COOKIES", "")) in ("1", "True")
    client = conf.get("CLIENT")
    if isinstance(client, AppleClient):
        if not conf.get("REDIRECT_URI"):
            raise ImproperlyConfigured("APPLE_SIGN_IN needs REDIRECT_URI.")
        return AppleSignIn(
            client,
            redirect_uri=str(conf["REDIRECT_URI"]),
            store=DjangoStore(),
            secure_cookies=not insecure,
        )
    environ = {f"APPLE_{name}": str(value) for name, value in conf.items()}
    try:
        return from_environ(environ, store=DjangoStore())
    except ValueError as exc:
        raise ImproperlyConfigured(
            str(exc).replace("environment variable APPLE_", "APPLE_SIGN_IN key ")
        ) from exc


def forget(**_: Any) -> None:
    """Drop the cached :class:`AppleSignIn` (connected to Django's ``setting_changed``)."""
    apple_sign_in.cache_clear()
