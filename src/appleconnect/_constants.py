"""Apple's pinned endpoints and the numbers that Apple's documentation fixes.

Endpoints are pinned rather than discovered: Apple silently changed the issuer in its discovery
document in June 2025 while tokens kept ``iss=https://appleid.apple.com`` (see
docs/apple-protocol.md#quirk-pinned-issuer and docs/pitfalls.md#pitfall-discovery-issuer).
"""

from __future__ import annotations

APPLE_BASE_URL = "https://appleid.apple.com"
"""Where Apple's Sign in with Apple endpoints live; one setting points everything elsewhere."""

APPLE_ISSUER = "https://appleid.apple.com"
"""The ``iss`` of every identity token and notification, and the ``aud`` of every client secret."""

AUTHORIZE_PATH = "/auth/authorize"
TOKEN_PATH = "/auth/token"  # noqa: S105 - a path, not a password
REVOKE_PATH = "/auth/revoke"
KEYS_PATH = "/auth/keys"
MIGRATION_PATH = "/auth/usermigrationinfo"

CLIENT_SECRET_MAX_TTL = 15_777_000
"""Apple refuses a client secret whose ``exp`` is further than this many seconds from now."""

AUTHORIZATION_CODE_TTL = 300
"""An authorization code is valid for five minutes and can be used once."""

RELAY_DOMAINS = ("privaterelay.appleid.com", "private.icloud.com")
"""Domains of Hide My Email relay addresses. Prefer the ``is_private_email`` claim to this list."""

RENAMED_VARIABLES = {
    "APPLECONNECT_KEY_FILE": "APPLECONNECT_PRIVATE_KEY_FILE",
    "APPLECONNECT_CLIENT_IDS": "APPLECONNECT_CLIENT_ID (the Services ID) and APPLECONNECT_APP_IDS",
}
"""Variables that older versions of ``appleconnect secret`` and ``doctor`` read, and the settings
that replace them: the commands and the service read the same variables, with one meaning."""
