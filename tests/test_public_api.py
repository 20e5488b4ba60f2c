"""The library's public API is exactly what is intended: nothing leaks, nothing is missing."""

from __future__ import annotations

import importlib
import subprocess
import sys

import appleconnect

INTENDED = {
    # constants
    "APPLE_BASE_URL",
    "APPLE_ISSUER",
    # client secret, keys, verification
    "ClientSecret",
    "AppleKeys",
    "verify_identity_token",
    "averify_identity_token",
    "IdentityToken",
    # the REST client
    "AppleClient",
    "AsyncAppleClient",
    "TokenResponse",
    "MigrationInfo",
    # callbacks and notifications
    "parse_authorization_response",
    "AuthorizationResponse",
    "AppleUser",
    "parse_notification",
    "aparse_notification",
    "Notification",
    # errors
    "AppleConnectError",
    "AppleError",
    "InvalidRequest",
    "InvalidClient",
    "InvalidGrant",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "InvalidScope",
    "AppleUnavailable",
    "KeysUnavailable",
    "InvalidToken",
    "InvalidIdentityToken",
    "InvalidNotification",
    "InvalidAuthorizationResponse",
}


def test_all_is_exactly_the_intended_api() -> None:
    assert set(appleconnect.__all__) == INTENDED
    assert appleconnect.__all__ == sorted(appleconnect.__all__)


def test_every_name_in_all_exists() -> None:
    for name in appleconnect.__all__:
        assert getattr(appleconnect, name) is not None


def test_public_names_are_documented() -> None:
    for name in appleconnect.__all__:
        obj = getattr(appleconnect, name)
        if callable(obj):
            assert obj.__doc__, name


def test_error_tree() -> None:
    from appleconnect import (
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

    for cls in (
        InvalidRequest,
        InvalidClient,
        InvalidGrant,
        UnauthorizedClient,
        UnsupportedGrantType,
        InvalidScope,
    ):
        assert issubclass(cls, AppleError)
    for cls in (InvalidIdentityToken, InvalidNotification):
        assert issubclass(cls, InvalidToken)
    for cls in (AppleError, AppleUnavailable, InvalidToken, InvalidAuthorizationResponse):
        assert issubclass(cls, AppleConnectError)
    assert not issubclass(AppleUnavailable, AppleError)
    # An undecidable token during an outage is an outage, never an invalid token.
    assert issubclass(KeysUnavailable, AppleUnavailable)
    assert not issubclass(KeysUnavailable, InvalidToken)


def test_invalid_client_message_lists_the_usual_causes() -> None:
    from appleconnect import InvalidClient
    from appleconnect._errors import apple_error_from_response

    error = apple_error_from_response("invalid_client", None, 400)
    assert isinstance(error, InvalidClient)
    text = str(error)
    for cause in ("Key ID", "Team ID", "Services ID", "expired", "clock", "appleconnect doctor"):
        assert cause in text


def test_library_does_not_import_the_emulator_or_the_service() -> None:
    code = (
        "import sys, appleconnect; "
        "bad = [m for m in sys.modules if m.startswith(('appleconnect.emulator', "
        "'appleconnect.server', 'fastapi', 'sqlalchemy', 'joserfc', 'jwt'))]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_private_modules_are_importable() -> None:
    for module in ("_client", "_identity", "_keys", "_secret", "_jws", "_notifications"):
        assert importlib.import_module(f"appleconnect.{module}")


def test_the_version_is_declared_once() -> None:
    # pyproject.toml takes the version from __version__ (hatch), so the installed metadata and
    # the module agree, and the command's --version says the same.
    import importlib.metadata

    from click.testing import CliRunner

    from appleconnect.cli import cli

    assert importlib.metadata.version("appleconnect") == appleconnect.__version__
    shown = CliRunner().invoke(cli, ["--version"])
    assert appleconnect.__version__ in shown.output
