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

__all__ = ["HSTS", "PAGE_POLICY", "SecurityHeaders", "add_security_headers", "secure"]

PAGE_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""The policy of the service's own HTML pages (demo, error, hand-off) and of its JSON."""

HSTS = "max-age=31536000"
"""One year, this host only: ``includeSubDomains`` and ``preload`` are the domain owner's call."""

_POLICY_TYPES = (b"text/html", b"application/json")
_DEFAULTS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
_CSP = b"content-security-policy"
_PAGE_POLICY = PAGE_POLICY.encode("latin-1")
_HSTS = (b"strict-transport-security", HSTS.encode("latin-1"))
RawHeaders = list[tuple[bytes, bytes]]


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
                headers = message["headers"] = list(message.get("headers", ()))
                secure(headers, production=production)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_security_headers(headers: MutableHeaders, *, production: bool) -> None:
    """Set the headers the response does not set itself."""
    secure(headers.raw, production=production)


def secure(headers: RawHeaders, *, production: bool) -> None:
    """Add to raw ASGI ``headers``, in place, what the response does not set itself. One pass
    over the response's own headers: this runs for every answer the service gives."""
    names: set[bytes] = set()
    policy: bytes | None = None
    policy_at = -1
    content_type = b""
    for index, (name, value) in enumerate(headers):
        lowered = name.lower()
        if lowered == _CSP:
            if policy is None:
                policy, policy_at = value, index
        elif lowered == b"content-type" and lowered not in names:
            content_type = value
        names.add(lowered)
    if policy is not None and b"frame-ancestors" not in policy:
        # As MutableHeaders' assignment does: the first one is replaced, any other dropped.
        fixed = (_CSP, policy.rstrip(b"; ") + b"; frame-ancestors 'none'")
        headers[:] = [
            fixed if i == policy_at else h
            for i, h in enumerate(headers)
            if i == policy_at or h[0].lower() != _CSP
        ]
    headers.extend(header for header in _DEFAULTS if header[0] not in names)
    if policy is None and content_type.lower().startswith(_POLICY_TYPES):
        headers.append((_CSP, _PAGE_POLICY))
    if production and _HSTS[0] not in names:
        headers.append(_HSTS)
