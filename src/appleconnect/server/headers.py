"""The security headers of every response the service sends, in one ASGI middleware.

:class:`SecurityHeaders` adds what a response does not set itself:

- ``Cache-Control: no-store``: answers carry session tokens (``apple_connect``, the finish
  redirect's cookie, the callback's hand-off page), user data (``get_currentuserinfo``, the demo
  page) or one-time state (``apple_request_auth``), so nothing is kept by a browser or a shared
  cache. Static assets (the button images, ``embed.js``) set their own public caching;
- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: same-origin`` (URLs such as the
  finish link never leave the site in a ``Referer``);
- a ``Content-Security-Policy`` on HTML and JSON answers: no script, styles inline only,
  images from here, forms posting only here, ``frame-ancestors 'none'`` (the service is never
  framed: the embed flow opens a popup, and its buttons are images); a page that sets a policy
  of its own (the admin panel, the popup's message page) keeps it, with ``frame-ancestors
  'none'`` added when it has none;
- ``Strict-Transport-Security`` in production mode (HTTPS only).

docs/service.md#response-headers.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .container import ServiceContainer

__all__ = ["HSTS", "PAGE_POLICY", "SecurityHeaders", "add_security_headers"]

PAGE_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""The policy of the service's own HTML pages (demo, error, hand-off) and of its JSON."""

HSTS = "max-age=31536000"
"""One year, this host only: ``includeSubDomains`` and ``preload`` are the domain owner's call."""

_POLICY_TYPES = (b"text/html", b"application/json")


class SecurityHeaders:
    """Add the security headers (module docstring) to every HTTP response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service: ServiceContainer | None = getattr(scope["app"].state, "container", None)
        production = service is not None and not service.settings.sandbox

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_security_headers(MutableHeaders(scope=message), production=production)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_security_headers(headers: MutableHeaders, *, production: bool) -> None:
    """Set the headers the response does not set itself."""
    headers.setdefault("Cache-Control", "no-store")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    policy = headers.get("Content-Security-Policy")
    if policy is None:
        content_type = headers.get("content-type", "").encode("latin-1").lower()
        if content_type.startswith(_POLICY_TYPES):
            headers["Content-Security-Policy"] = PAGE_POLICY
    elif "frame-ancestors" not in policy:
        headers["Content-Security-Policy"] = policy.rstrip("; ") + "; frame-ancestors 'none'"
    if production:
        headers.setdefault("Strict-Transport-Security", HSTS)
