"""The one error type route handlers raise, and its JSON shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ServiceError", "error_body"]


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
