"""Sign-ins bound to the browser that started them (login CSRF and session fixation:
RFC 6749 section 10.12, RFC 9700 section 4.7).

``/auth/apple/start`` gives the browser a short-lived HttpOnly cookie holding a secret of this
one sign-in; the database keeps only its hash, with the state. Apple's form_post to the callback
is a cross-site POST that carries no ``SameSite=Lax`` cookie, so the binding is checked one
redirect later, at ``/auth/apple/finish``, a top-level GET on this site: only the browser that
holds the secret gets the session, and the finishing link is worthless anywhere else
(docs/service.md#one-browser-from-start-to-finish).

Each sign-in has a cookie of its own (``appleconnect_signin_<time><random>``), so sign-ins
started in several tabs all finish; a browser keeps at most :data:`MAX_PARALLEL` of them. In
production the names carry the ``__Host-`` prefix: no sibling subdomain can plant one.
"""

from __future__ import annotations

import secrets
import time

from starlette.requests import Request
from starlette.responses import Response

from .security import hash_token
from .settings import Settings

__all__ = ["MAX_PARALLEL", "SIGNIN_COOKIE", "bind", "browser_secrets", "forget"]

SIGNIN_COOKIE = "appleconnect_signin_"
MAX_PARALLEL = 5


def _prefix(settings: Settings) -> str:
    return ("__Host-" if settings.cookie_secure else "") + SIGNIN_COOKIE


def _cookies(request: Request, settings: Settings) -> list[tuple[str, str]]:
    """This browser's sign-in cookies, oldest first (their names start with the time)."""
    prefix = _prefix(settings)
    return sorted((k, v) for k, v in request.cookies.items() if k.startswith(prefix))


def browser_secrets(request: Request, settings: Settings) -> list[str]:
    """The secrets of the sign-ins this browser started (the newest few)."""
    return [value for _name, value in _cookies(request, settings)[-MAX_PARALLEL:]]


def bind(request: Request, response: Response, settings: Settings, *, max_age: int) -> str:
    """Give the browser a cookie with a new sign-in secret (returned, to be hashed and stored
    with the state); drop its oldest sign-in cookies beyond :data:`MAX_PARALLEL`."""
    secret = secrets.token_urlsafe(32)
    name = f"{_prefix(settings)}{int(time.time()):08x}{secrets.token_hex(3)}"
    for old, _value in _cookies(request, settings)[: -(MAX_PARALLEL - 1) or None]:
        _delete(response, settings, old)
    response.set_cookie(
        name,
        secret,
        max_age=max_age,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="lax",
        path="/",
    )
    return secret


def forget(request: Request, response: Response, settings: Settings, browser_hash: str) -> None:
    """Delete the cookie of the sign-in whose secret hashes to ``browser_hash``."""
    for name, value in _cookies(request, settings):
        if hash_token(value) == browser_hash:
            _delete(response, settings, name)


def _delete(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(
        name, path="/", secure=settings.cookie_secure, httponly=True, samesite="lax"
    )
