"""The emulator's HTTP helpers: bounded body readers, Apple's form and JSON answers.

Every body the emulator reads from outside goes through :func:`read_body` (a size limit checked
before and while reading); forms through :func:`parse_form`, JSON through :func:`read_json` (size-
and depth-limited). Apple's endpoints answer with :func:`apple_json` / :func:`apple_error`.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ._errors import OAuthError

MAX_FORM_BYTES = 16 * 1024
"""Largest body accepted on Apple's POST endpoints and the consent form."""
MAX_FORM_FIELDS = 32
MAX_QUERY_BYTES = 8 * 1024
"""Largest query string accepted on ``/auth/authorize``."""

JSON_MEDIA_TYPE = "application/json;charset=UTF-8"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class BodyTooLarge(Exception):
    """Raised when a request body exceeds its limit."""


def root_path(request: Request) -> str:
    """The prefix the app is mounted under (``""`` at the root); every generated URL uses it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_form(body: bytes) -> dict[str, str]:
    """Parse ``application/x-www-form-urlencoded``; a repeated or undecodable field is
    ``invalid_request`` (Apple: "a parameter is ... repeated")."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "The request body is malformed.") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"The parameter {name} is repeated.")
        form[name] = value
    return form


def apple_json(body: Mapping[str, Any], status: int = 200) -> Response:
    """A JSON answer with Apple's headers (``Cache-Control: no-store``, ``Pragma: no-cache``)."""
    return Response(
        content=json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type=JSON_MEDIA_TYPE,
        headers=NO_STORE,
    )


def apple_error(exc: OAuthError) -> Response:
    """Apple's ``ErrorResponse``: HTTP 400 with ``{"error", "error_description"}``."""
    return apple_json(exc.as_json(), exc.status)


async def read_apple_form(request: Request) -> dict[str, str]:
    """The body of ``/auth/token``, ``/auth/revoke`` or ``/auth/usermigrationinfo``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Invalid content type.")
    try:
        body = await read_body(request, MAX_FORM_BYTES)
    except BodyTooLarge as exc:
        raise OAuthError("invalid_request", "The request body is too large.") from exc
    return parse_form(body)


def parse_authorize_query(query: bytes) -> dict[str, list[str]]:
    """The query string of an authorization request, refused when too large or malformed."""
    if len(query) > MAX_QUERY_BYTES:
        raise OAuthError("invalid_request", "The request is too large.")
    try:
        return urllib.parse.parse_qs(
            query.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "The request is malformed.") from exc
