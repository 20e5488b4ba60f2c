"""The errors route handlers raise: :class:`ServiceError` (and its JSON shape) for the API and
the sign-in pages, :class:`AdminRequired` and :class:`Forbidden` for the admin panel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AdminRequired",
    "Forbidden",
    "ServiceError",
    "error_body",
    "invalid",
    "missing",
    "state_error",
]


class ServiceError(Exception):
    """An error shown to the caller as ``{"status":"error","error":code,"message":sentence}``.

    ``field`` names the offending parameter, when there is one. The message is safe to show;
    Apple's specific reason, when it would help an attacker, is logged instead.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 400,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.code = code
        self.message = message
        self.status = status
        self.field = field
        self.headers = dict(headers or {})
        super().__init__(message)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "error", "error": code, "message": message}
    if field is not None:
        body["field"] = field
    return body


def invalid(field: str, message: str) -> ServiceError:
    return ServiceError("invalid_parameter", message, field=field)


def missing(field: str) -> ServiceError:
    return ServiceError("missing_parameter", f"The parameter {field!r} is required.", field=field)


_STATE_MESSAGES = {
    "unknown": "The sign-in state is not one this service issued; start again.",
    "used": "This sign-in was already used (each can be finished once); start again.",
    "expired": "The sign-in took too long and expired; start again.",
}


def state_error(reason: str) -> ServiceError:
    """The error for a sign-in ``state`` that is unknown, already used or expired."""
    return ServiceError(
        f"state_{reason}" if reason != "unknown" else "invalid_state",
        _STATE_MESSAGES[reason],
        field="state",
    )


class AdminRequired(Exception):
    """Raised when an admin page is requested without a valid admin session."""


class Forbidden(Exception):
    """Raised when an admin form arrives without its CSRF token or from another origin."""
