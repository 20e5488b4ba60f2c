"""The OpenAPI description of the REST API: the success and error bodies and the parameters.

The REST API reads its parameters itself (:func:`.params.read_params`: a query string, a form or
a JSON body), so FastAPI cannot infer them from the handlers' signatures; :func:`api_operation`
describes them instead, and :func:`error_responses` the error answers (the JSON error body every
route shares; a page on the browser routes). The document is exact: .ci/schemathesis.sh checks
it against a running sandbox, and tests/server/test_server_openapi_exact.py pins the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from .params import API_KEY_HEADER, MAX_LENGTHS

__all__ = [
    "API_KEY_SECURITY",
    "CALLBACK_BODY",
    "CALLBACK_RESPONSES",
    "NOTIFICATION_BODY",
    "NOTIFICATION_RESPONSES",
    "SECURITY_SCHEMES",
    "SESSION_SECURITY",
    "SUCCESS_SCHEMAS",
    "WEB_RESPONSES",
    "api_operation",
    "api_paths",
    "error_responses",
    "install",
]

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


_HTML = {"text/html": {"schema": {"type": "string"}}}
"""A page for a browser."""


def _error(description: str, *, page: bool = False) -> dict[str, Any]:
    """An error answer: the JSON error body, or on the browser routes (``page``) an HTML page
    unless the client's ``Accept`` asks for JSON only (:func:`.error_handlers.wants_json`)."""
    content: dict[str, Any] = {"application/json": {"schema": _ERROR_SCHEMA}}
    if page:
        content = {**_HTML, **content}
    return {"description": description, "content": content}


def _with_retry_after(response: dict[str, Any], text: str) -> dict[str, Any]:
    retry_after = {"description": text, "schema": {"type": "integer"}}
    return {**response, "headers": {"Retry-After": retry_after}}


_DESCRIPTIONS = {
    "400": "A parameter is missing or invalid, or Apple refused the code or token.",
    "401": "The API key or the session is missing (missing_parameter, field key or cookie) or "
    "not valid (invalid_key, invalid_cookie), or the id_token or refresh token is not valid.",
    "404": "The account was deleted meanwhile.",
    "413": "The request body is too large.",
    "415": "The body is neither a form nor JSON.",
    "429": "Too many requests from this client IP or with this API key.",
    "502": "Apple refused this service's credentials (the log says why).",
    "503": "Apple could not be reached, or its signing keys could not be fetched "
    "(apple_unavailable), or the database is unavailable (database_unavailable), or the "
    "service's Apple settings are not set yet (not_configured).",
}
_RETRY_AFTER = {
    "429": "Seconds until the limit's window ends.",
    "503": "With apple_unavailable or database_unavailable: seconds after which to try again.",
}


def error_responses(*codes: str, page: bool = False) -> dict[int | str, dict[str, Any]]:
    """The documented error answers ``codes`` (JSON, or pages on the browser routes)."""
    answers: dict[int | str, dict[str, Any]] = {
        code: _error(_DESCRIPTIONS[code], page=page) for code in codes
    }
    for code, text in _RETRY_AFTER.items():
        if code in answers:
            answers[code] = _with_retry_after(answers[code], text)
    # The body limit answers before any route, always in JSON (.middleware.BodyLimit).
    if "413" in answers:
        answers["413"] = _error(_DESCRIPTIONS["413"])
    return answers


WEB_RESPONSES: dict[int | str, dict[str, Any]] = {
    "303": {"description": "Redirect (to Apple, to the finishing page, or to next)."},
    **error_responses("400", "429", "503", page=True),
}
"""The answers of ``/auth/apple/start``."""

CALLBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    "200": {
        "description": "For a flow an app started (apple_request_auth): a page that hands the "
        "code to the app.",
        "content": _HTML,
    },
    **WEB_RESPONSES,
    **error_responses("401", "413", "502", page=True),
}
"""The answers of ``/auth/apple/callback``, Apple's form_post."""

CALLBACK_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {
                    name: {"type": "string"}
                    for name in ("state", "code", "id_token", "user", "error")
                },
            }
        }
    },
}
"""What Apple posts to the callback (``response_mode=form_post``)."""

NOTIFICATION_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["payload"],
                "properties": {"payload": {"type": "string", "description": "a signed JWT"}},
            }
        }
    },
}
"""Apple's server-to-server notification: one signed JWT in a JSON object."""

NOTIFICATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    "200": {
        "description": "Applied, or a duplicate of one already applied.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["status", "event", "duplicate"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok"]},
                        "event": {"type": "string"},
                        "duplicate": {"type": "boolean"},
                    },
                }
            }
        },
    },
    **error_responses("400", "413", "502", "503"),
}
NOTIFICATION_RESPONSES["400"]["description"] = "Forged or malformed."

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


_DISCOURAGED = "discouraged: query strings end up in logs, histories and Referer headers"
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKeyHeader": {
        "type": "apiKey",
        "description": "The API key (preferred).",
        "in": "header",
        "name": API_KEY_HEADER,
    },
    "apiKeyParameter": {
        "type": "apiKey",
        "description": f"The API key as the 'key' parameter, in the query or the body "
        f"({_DISCOURAGED}).",
        "in": "query",
        "name": "key",
    },
    "sessionBearer": {
        "type": "http",
        "description": "The session token from apple_connect: Authorization: Bearer acs_… "
        "(preferred).",
        "scheme": "bearer",
    },
    "sessionParameter": {
        "type": "apiKey",
        "description": "The session token as the 'cookie' parameter, in the query or the body "
        f"({_DISCOURAGED}).",
        "in": "query",
        "name": "cookie",
    },
}
"""How the API key and the session may be sent. They are declared here rather than as FastAPI
``Security`` dependencies, which would be resolved on every request only to be described
(the values are read by :func:`.params.api_key_of` and :func:`.params.bearer_or_param`)."""

API_KEY_SECURITY = ("apiKeyHeader", "apiKeyParameter")
SESSION_SECURITY = ("sessionBearer", "sessionParameter")
"""The ``security`` of an operation: either scheme of the pair is enough."""


_NO_CONTROL = "^[^\\x00-\\x1f\\x7f]*$"
"""Control characters are refused in every parameter but ``user``."""


def _parameter_schema(name: str, text: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": MAX_LENGTHS[name], "description": text}
    if name != "user":
        schema["pattern"] = _NO_CONTROL
    return schema


_QUERY_OR_BODY = (
    "Each parameter may come once: in the query string (GET) or in the body (POST; the query "
    "string is read as well, but a parameter given in both places, or twice, is refused). "
    "The API key and the session are described by the security schemes."
)


def api_operation(
    params: Mapping[str, str],
    *,
    name: str,
    method: str,
    errors: tuple[str, ...],
    security: tuple[str, ...],
) -> dict[str, Any]:
    """Describe an operation of the REST API: its parameters (the query string for GET, a form
    or JSON body for POST), its answer, its errors and its credential (``security``: names in
    :data:`SECURITY_SCHEMES`)."""
    operation: dict[str, Any] = {
        "description": _QUERY_OR_BODY,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": SUCCESS_SCHEMAS[name]}},
            },
            **error_responses(*errors),
        },
        "security": [{scheme: []} for scheme in security],
    }
    if not params:
        return operation
    if method == "GET":
        operation["parameters"] = [
            {"name": p, "in": "query", "required": False, "schema": _parameter_schema(p, text)}
            for p, text in params.items()
        ]
        return operation
    properties = {p: _parameter_schema(p, text) for p, text in params.items()}
    json_properties = dict(properties)
    if "user" in properties:
        # In a JSON body, Apple's user object may also be given as an object.
        json_properties["user"] = {"oneOf": [properties["user"], {"type": "object"}]}
    operation["requestBody"] = {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": properties}
            },
            "application/json": {"schema": {"type": "object", "properties": json_properties}},
        },
    }
    return operation


def install(app: FastAPI) -> None:
    """Make ``app``'s document exact: FastAPI adds a 422 answer to every operation with a
    parameter, but a parameter FastAPI refuses is answered 400 here
    (:mod:`.error_handlers`), which the operations already describe; and add the security
    schemes the REST API's operations name (:data:`SECURITY_SCHEMES`)."""
    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            if not schemas:
                schema.get("components", {}).pop("schemas", None)
            schemes = {name: dict(scheme) for name, scheme in SECURITY_SCHEMES.items()}
            schema.setdefault("components", {})["securitySchemes"] = schemes
        return app.openapi_schema or {}

    app.openapi = document  # type: ignore[method-assign]
