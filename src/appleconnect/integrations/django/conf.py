"""The project's :class:`AppleSignIn`, built once from the ``APPLE_SIGN_IN`` setting.

``APPLE_SIGN_IN`` holds the same values as the environment variables of
:func:`~appleconnect.integrations.from_environ` without their ``APPLE_`` prefix (``TEAM_ID``,
``KEY_ID``, ``PRIVATE_KEY`` or ``PRIVATE_KEY_FILE``, ``SERVICES_ID``, ``APP_ID``,
``REDIRECT_URI``, ``BASE_URL``, ``INSECURE_COOKIES``, ``ENCRYPTION_KEY``), or ``CLIENT`` (an
:class:`~appleconnect.AppleClient`) with ``REDIRECT_URI`` and ``ENCRYPTION_KEY``.
``ENCRYPTION_KEY`` (required) is the Fernet key, or keys, that encrypt Apple's refresh tokens in
the ``AppleIdentity`` table.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from appleconnect import AppleClient

from .._crypto import TokenCipher
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
            encryption_key=encryption_keys(conf),
            secure_cookies=not insecure,
        )
    environ = {f"APPLE_{name}": str(value) for name, value in conf.items()}
    keys = encryption_keys(conf)
    environ["APPLE_ENCRYPTION_KEY"] = keys if isinstance(keys, str) else ",".join(keys)
    try:
        return from_environ(environ, store=DjangoStore())
    except ValueError as exc:
        raise ImproperlyConfigured(
            str(exc).replace("environment variable APPLE_", "APPLE_SIGN_IN key ")
        ) from exc


def encryption_keys(conf: Mapping[str, Any] | None = None) -> str | list[str]:
    """``APPLE_SIGN_IN["ENCRYPTION_KEY"]`` (a key, keys separated by commas, or a list), checked;
    :class:`ImproperlyConfigured` naming the setting when it is missing or not Fernet keys."""
    if conf is None:
        conf = getattr(settings, "APPLE_SIGN_IN", None) or {}
    keys = conf.get("ENCRYPTION_KEY")
    if not keys:
        raise ImproperlyConfigured(
            "Set APPLE_SIGN_IN['ENCRYPTION_KEY']: the Fernet key that encrypts Apple's refresh "
            "tokens at rest (see docs/integrations.md)."
        )
    value = list(keys) if isinstance(keys, list | tuple) else str(keys)
    try:
        TokenCipher(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"APPLE_SIGN_IN['ENCRYPTION_KEY'] is wrong: {exc}") from None
    return value


def check_encryption_key(**_: Any) -> list[checks.CheckMessage]:
    """Django system check (``manage.py check``, ``runserver``): the server does not start
    without a usable ``APPLE_SIGN_IN["ENCRYPTION_KEY"]``."""
    try:
        encryption_keys()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="appleconnect_apple.E001")]
    return []


def forget(**_: Any) -> None:
    """Drop the cached :class:`AppleSignIn` (connected to Django's ``setting_changed``)."""
    apple_sign_in.cache_clear()
