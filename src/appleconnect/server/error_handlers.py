"""How errors are answered: JSON for the API and Apple's notifications, a page for browsers.

:func:`install` registers one handler per exception type; :func:`error_response` is also what
the not-configured gate (:mod:`.middleware`) answers with.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg  # type: ignore[import-untyped]
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.routing import Match

from appleconnect.logformat import REQUEST_ID

from .admin.pages import page
from .container import ServiceContainer
from .errors import AdminRequired, Forbidden, ServiceError, error_body
from .headers import add_security_headers
from .health import (
    OUTAGE_ADVICE,
    UNAVAILABLE,
    database_unavailable,
    is_database_unavailable,
)
from .html import templates

__all__ = ["error_response", "install", "wants_json"]

log = logging.getLogger(__name__)


def wants_json(request: Request) -> bool:
    path = request.url.path
    if path.startswith("/api") or path.startswith("/auth/apple/notifications"):
        return True
    # Pages answer browsers with HTML; a client asking for JSON only gets JSON.
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def error_response(request: Request, exc: ServiceError) -> Response:
    if wants_json(request):
        return JSONResponse(
            error_body(exc.code, exc.message, exc.field),
            status_code=exc.status,
            headers=exc.headers,
        )
    return templates.TemplateResponse(
        request,
        "error.html",
        {"message": exc.message},
        status_code=exc.status,
        headers=exc.headers,
    )


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    loc = exc.errors()[0].get("loc", ()) if exc.errors() else ()
    field = str(loc[-1]) if loc else None
    return error_response(
        request, ServiceError("invalid_parameter", "A parameter is invalid.", field=field)
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
_HTTP_MESSAGES = {404: "There is nothing at this address.", 405: "This method is not allowed."}


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")


def allowed_methods(request: Request) -> str:
    """The methods some route answers on this request's path, for ``Allow`` (RFC 9110, 15.5.6):
    a path served by one route per method lists them all."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return error_response(
        request,
        ServiceError(
            _HTTP_CODES.get(exc.status_code, "http_error"),
            _HTTP_MESSAGES.get(exc.status_code, "The request failed."),
            status=exc.status_code,
            headers=headers,
        ),
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path)
    response = error_response(
        request,
        ServiceError("internal_error", "Something went wrong on our side.", status=500),
    )
    # Starlette answers this one outside every middleware, SecurityHeaders included.
    container = getattr(request.app.state, "container", None)
    production = container is not None and not container.settings.sandbox
    add_security_headers(response.headers, production=production)
    if REQUEST_ID.get() != "-":
        response.headers["X-Request-ID"] = REQUEST_ID.get()
    return response


async def _database_error(request: Request, exc: Exception) -> Response:
    """Errors of the database layer: 503 ``database_unavailable`` while the database cannot be
    reached (logged once per outage, by :class:`.health.DatabaseHealth`), else a 500.

    Unlike the catch-all, this handler does not re-raise: the connection stays open and the
    server logs no traceback per request.
    """
    if not is_database_unavailable(exc):
        return await _unexpected(request, exc)
    container: ServiceContainer | None = getattr(request.app.state, "container", None)
    if container is not None:
        container.health.failed(exc)
        container.health.unavailable_answers += 1
    advice = getattr(request.state, OUTAGE_ADVICE, None) or UNAVAILABLE
    return error_response(request, database_unavailable(advice))


async def _admin_required(request: Request, _exc: Exception) -> Response:
    if request.method == "GET":
        return page(request, "signed_out.html", {}, status=401)
    return RedirectResponse("/admin/login", status_code=303)


async def _forbidden(request: Request, _exc: Exception) -> Response:
    return page(
        request,
        "message.html",
        {"text": "The form expired or came from another site. Reload the page and retry."},
        status=403,
    )


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    ServiceError: _service_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    Exception: _unexpected,
    # The errors a database outage raises: the driver's connect error (a socket error),
    # SQLAlchemy's wrapper around the driver's errors, and asyncpg's own errors at connect.
    SQLAlchemyError: _database_error,
    OSError: _database_error,
    asyncpg.PostgresError: _database_error,
    asyncpg.InterfaceError: _database_error,
    AdminRequired: _admin_required,
    Forbidden: _forbidden,
}


def install(app: FastAPI) -> None:
    """Register the handlers of :data:`HANDLERS` on ``app``."""
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
