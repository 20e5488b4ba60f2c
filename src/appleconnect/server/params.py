"""Reading and validating request parameters from a query string, a form or a JSON body.

The REST API takes its parameters either way, as WordPress Apple Connect clients send them
(``GET ?key=…`` or a POSTed form; docs/service.md#wordpress-compatible-api), so one reader
merges them: a parameter given twice, in two places or twice in one, is refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from .errors import ServiceError, invalid, missing
from .jsonbody import read_json

MAX_LENGTHS = {
    "key": 200,
    "cookie": 200,
    "code": 1024,
    "state": 200,
    "nonce": 256,
    "redirect_uri": 2048,
    "id_token": 16_384,
    "user": 4096,
    "refresh_token": 1024,
    "client_id": 255,
}
MAX_JSON_BODY = 32_768
"""A JSON body holds at most the parameters above, each within its length."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


async def read_params(request: Request) -> dict[str, str]:
    """Every known parameter once, from the query string and the body, validated for size."""
    pairs: list[tuple[str, Any]] = list(request.query_params.multi_items())
    if request.method == "POST":
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            body = read_json(await request.body() or b"{}", max_bytes=MAX_JSON_BODY)
            if not isinstance(body, dict):
                raise ServiceError("invalid_body", "The JSON body must be an object.", status=400)
            for name, value in body.items():
                if name == "user" and isinstance(value, dict):
                    value = json.dumps(value)
                pairs.append((name, value))
        elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form(max_files=0, max_fields=50)
            pairs.extend(form.multi_items())
        elif content_type and await request.body():
            raise ServiceError(
                "invalid_body",
                "Send parameters as a form, as JSON, or in the query string.",
                status=415,
            )
    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in MAX_LENGTHS:
            continue
        if not isinstance(value, str):
            raise invalid(name, f"The parameter {name!r} must be a string.")
        if name in values:
            raise invalid(name, f"The parameter {name!r} was given more than once.")
        if len(value) > MAX_LENGTHS[name]:
            raise invalid(name, f"The parameter {name!r} is too long.")
        if name != "user" and _CONTROL.search(value):
            raise invalid(name, f"The parameter {name!r} contains control characters.")
        values[name] = value
    return values


def required(values: dict[str, str], name: str) -> str:
    value = values.get(name, "")
    if not value:
        raise missing(name)
    return value


API_KEY_HEADER = "X-API-Key"
"""The header that carries the API key; the ``key`` parameter works too (discouraged: query
strings end up in logs and browser histories)."""


def api_key_of(request: Request, values: dict[str, str]) -> str:
    """The API key from the ``X-API-Key`` header or the ``key`` parameter ("" if neither)."""
    header = request.headers.get(API_KEY_HEADER)
    if header is None:
        return values.get("key", "")
    header = header.strip()
    if len(header) > MAX_LENGTHS["key"] or _CONTROL.search(header):
        raise invalid("key", f"The {API_KEY_HEADER} header is invalid.")
    if "key" in values and values["key"] != header:
        raise invalid("key", f"The key parameter and the {API_KEY_HEADER} header differ.")
    return header


def bearer_or_param(request: Request, values: dict[str, str]) -> str:
    """The session token from ``Authorization: Bearer`` or the ``cookie`` parameter."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
        if "cookie" in values and values["cookie"] != token:
            raise invalid("cookie", "The cookie parameter and the Bearer token differ.")
        return token
    token = values.get("cookie", "")
    if not token:
        raise ServiceError(
            "missing_parameter",
            "Give the session as the 'cookie' parameter or an Authorization: Bearer header.",
            status=401,
            field="cookie",
        )
    return token
