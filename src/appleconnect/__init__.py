"""appleconnect: Sign in with Apple for Python.

The client library's public API. Implementation modules are private; everything a user needs is
importable from here. The emulator (:mod:`appleconnect.emulator`) and the service
(:mod:`appleconnect.server`) are separate packages that are not imported by this one.
"""

from __future__ import annotations

from ._authorization import AppleUser, AuthorizationResponse, parse_authorization_response
from ._client import AppleClient, AsyncAppleClient, MigrationInfo, TokenResponse
from ._constants import APPLE_BASE_URL, APPLE_ISSUER
from ._errors import (
    AppleConnectError,
    AppleError,
    AppleUnavailable,
    InvalidAuthorizationResponse,
    InvalidClient,
    InvalidGrant,
    InvalidIdentityToken,
    InvalidNotification,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    KeysUnavailable,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from ._identity import IdentityToken, averify_identity_token, verify_identity_token
from ._keys import AppleKeys
from ._notifications import Notification, aparse_notification, parse_notification
from ._secret import ClientSecret

__version__ = "0.1.0"

__all__ = [
    "APPLE_BASE_URL",
    "APPLE_ISSUER",
    "AppleClient",
    "AppleConnectError",
    "AppleError",
    "AppleKeys",
    "AppleUnavailable",
    "AppleUser",
    "AsyncAppleClient",
    "AuthorizationResponse",
    "ClientSecret",
    "IdentityToken",
    "InvalidAuthorizationResponse",
    "InvalidClient",
    "InvalidGrant",
    "InvalidIdentityToken",
    "InvalidNotification",
    "InvalidRequest",
    "InvalidScope",
    "InvalidToken",
    "KeysUnavailable",
    "MigrationInfo",
    "Notification",
    "TokenResponse",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "aparse_notification",
    "averify_identity_token",
    "parse_authorization_response",
    "parse_notification",
    "verify_identity_token",
]
