"""The service's ASGI middlewares, outermost first as ``create_app`` adds them last:

- :class:`SettingsMiddleware` applies settings changed in the admin panel (in any process)
  before the request is handled, so a change counts at once;
- :class:`NotConfiguredGate` answers ``not_configured`` on the sign-in paths while the Apple
  settings are missing;
- :class:`BodyLimit` refuses request bodies over ``max_body_bytes`` before a handler reads them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .container import ServiceContainer
from .error_handlers import error_response
from .errors import ServiceError, error_body
from .live_settings import LiveSettings

__all__ = [
    "NOT_CONFIGURED_PATHS",
    "NO_DATABASE_PATHS",
    "BodyLimit",
    "NotConfiguredGate",
    "SettingsMiddleware",
]


_UNFRAMED_MEANS_EMPTY = ("1.0", "1.1")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before a handler reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        framed = False  # whether the request says it has a body
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await _too_large(scope, receive, send)
                    return
                framed = True
            elif name == b"transfer-encoding":
                framed = True
        if not framed and scope.get("http_version") in _UNFRAMED_MEANS_EMPTY:
            # HTTP/1 without Content-Length or Transfer-Encoding: the request has no body
            # (RFC 9112 section 6.3) and the server reads none. Most requests (every GET).
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ServiceError(
                        "payload_too_large", "The request body is too large.", status=413
                    )
            return message

        await self.app(scope, limited, send)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        error_body("payload_too_large", "The request body is too large."), status_code=413
    )
    await response(scope, receive, send)


NOT_CONFIGURED_PATHS = ("/api/", "/auth/apple/")


class NotConfiguredGate:
    """Answer ``not_configured`` (503) on the sign-in paths while Apple settings are missing.

    A production service may start without Apple credentials and get them from the admin panel;
    until then the REST API and the web flow say so, and everything else (the admin panel
    first) works. The error is rendered as JSON or as a page, like every other error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(NOT_CONFIGURED_PATHS):
            service: ServiceContainer | None = getattr(scope["app"].state, "container", None)
            if service is not None and service.apple.missing:
                error = ServiceError(
                    "not_configured",
                    "Sign in with Apple is not set up on this service yet; the administrator "
                    "enters the Apple settings in the admin panel.",
                    status=503,
                )
                await error_response(Request(scope), error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


NO_DATABASE_PATHS = ("/healthz", "/readyz", "/metrics")
"""Paths answered without the settings refresh: liveness and metrics (which never touch the
database) and readiness (which tries the database itself and reports what it finds)."""


class SettingsMiddleware:
    """Before each request, apply settings that another process (or this one) changed."""

    def __init__(self, app: ASGIApp, live: LiveSettings) -> None:
        self.app = app
        self.live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in NO_DATABASE_PATHS:
            service: ServiceContainer | None = getattr(scope["app"].state, "container", None)
            if service is not None:
                await self.live.refresh(service)
        await self.app(scope, receive, send)
