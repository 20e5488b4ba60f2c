"""The OpenAPI description of the REST API: the success and error bodies and the parameters.

The REST API reads its parameters itself (:func:`.params.read_params`: a query string, a form or
a JSON body), so FastAPI cannot infer them from the handlers' signatures; :func:`api_operation`
describes them instead, and :data:`ERROR_RESPONSES` the error body every route shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ERROR_RESPONSES", "SUCCESS_SCHEMAS", "WEB_RESPONSES", "api_operation", "api_paths"]

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "error", "message"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "error": {"type": "string", "description": "a code listed in docs/service.md"},
        "message": {"type": "string", "description": "one sentence, safe to show"},
        "field": {"type": "string", "description": "the parameter at fault, if one is"},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


ERROR_RESPONSES: dict[str, Any] = {
    "400": _error("A parameter is missing or invalid, or Apple refused the code or token."),
    "401": _error("The API key, session, id_token or refresh token is not valid."),
    "413": _error("The request body is too large."),
    "429": {
        **_error("Too many requests from this client IP or with this API key."),
        "headers": {
            "Retry-After": {
                "description": "Seconds until the limit's window ends.",
                "schema": {"type": "integer"},
            }
        },
    },
    "502": _error("Apple refused this service's credentials (the log says why)."),
    "503": {
        **_error(
            "Apple could not be reached, or its signing keys could not be fetched "
            "(apple_unavailable), or the service's Apple settings are not set yet "
            "(not_configured)."
        ),
        "headers": {
            "Retry-After": {
                "description": "With apple_unavailable: seconds after which to try again.",
                "schema": {"type": "integer"},
            }
        },
    },
}

WEB_RESPONSES: dict[int | str, dict[str, Any]] = {
    "303": {"description": "Redirect (to Apple, to the finishing page, or to next)."},
    "400": {"description": "A bad parameter or state (an HTML page)."},
    "429": ERROR_RESPONSES["429"],
}
"""The answers of the browser sign-in flow's documented routes."""

_OBJECT = {"type": "object", "additionalProperties": True}
SUCCESS_SCHEMAS: dict[str, dict[str, Any]] = {
    "apple_request_auth": {
        "type": "object",
        "required": ["status", "url", "state"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "url": {"type": "string", "description": "Apple's authorize URL"},
            "state": {"type": "string"},
        },
    },
    "apple_connect": {
        "type": "object",
        "required": ["status", "email", "cookie", "access_token", "id_token", "api_response"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "email": {"type": ["string", "null"]},
            "cookie": {"type": "string", "description": "the session token"},
            "access_token": {"type": ["string", "null"]},
            "id_token": {**_OBJECT, "description": "the verified claims"},
            "api_response": {
                "oneOf": [_OBJECT, {"type": "null"}],
                "description": "Apple's token response (null when no call to Apple was made)",
            },
        },
    },
    "validate_auth_cookie": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "valid": {"type": "boolean"},
            "user_id": {"type": "integer"},
        },
    },
    "get_currentuserinfo": {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ok"]}, "user": _OBJECT},
    },
    "logout": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}},
    "delete_account": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "deleted": {"type": "boolean"},
            "revoked_at_apple": {"type": "array", "items": {"type": "string"}},
            "revoke_failed": {"type": "array", "items": {"type": "string"}},
            "sessions_ended": {"type": "integer"},
        },
    },
}


def api_paths(path: str, methods: list[str]) -> list[tuple[str, str, str, bool]]:
    """``(path, method, operation_id, in_schema)``: every method, with and without a slash
    (only the form without the slash is in the document)."""
    name = path.rsplit("/", 1)[-1]
    return [
        (p, method, f"{name}_{method.lower()}", not p.endswith("/"))
        for method in methods
        for p in (path, path + "/")
    ]


def api_operation(
    params: Mapping[str, str], required_params: tuple[str, ...] = (), *, name: str
) -> dict[str, Any]:
    """Describe parameters that may come as a query string or as a form body, the answer,
    and the errors."""
    properties = {name: {"type": "string", "description": text} for name, text in params.items()}
    schema = {"type": "object", "properties": properties, "required": list(required_params)}
    return {
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": SUCCESS_SCHEMAS[name]}},
            },
            **ERROR_RESPONSES,
        },
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": text,
            }
            for name, text in params.items()
        ],
        "requestBody": {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "application/json": {"schema": schema},
            },
        },
    }
