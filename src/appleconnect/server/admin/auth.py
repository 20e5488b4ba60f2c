"""Admin sessions (from the one-time login link) and CSRF tokens for the panel's forms.

There is no admin password. ``appleconnect admin login-link`` (and ``serve``) print a one-time
link; following it and pressing "Continue" consumes it and opens an admin session: a 256-bit
token in an HttpOnly, SameSite=Strict cookie (:func:`admin_cookie`), stored only as its SHA-256
in the database (so every process knows it, and signing out ends it everywhere). Each form
carries a CSRF token derived from the session token with HMAC; requests from another origin are
refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, select

from ..db import DbSession
from ..models import SettingValue, utcnow
from ..security import constant_time_equal, hash_token, new_token
from ..settings import HOST_PREFIX, Settings

__all__ = [
    "ADMIN_COOKIE",
    "SESSION_TTL",
    "admin_cookie",
    "check_csrf",
    "create_admin_session",
    "csrf_token",
    "end_admin_session",
    "same_origin",
    "valid_admin_session",
]

ADMIN_COOKIE = "appleconnect_admin"


def admin_cookie(settings: Settings) -> tuple[str, str]:
    """The admin cookie's name and path: ``appleconnect_admin`` on ``/admin`` in sandbox mode;
    in production ``__Host-appleconnect_admin`` on ``/`` (the prefix requires that path), so
    that only this host can set it. It is SameSite=Strict and HttpOnly either way."""
    if settings.cookie_secure:
        return HOST_PREFIX + ADMIN_COOKIE, "/"
    return ADMIN_COOKIE, "/admin"


SESSION_TTL = 8 * 3600
ADMIN_PREFIX = "aca_"
# Admin sessions are rows of the key-value ``settings`` table (no schema change needed):
# key ``admin_session:<sha256 of the token>``, value the expiry time.
_ROW_PREFIX = "admin_session:"


async def create_admin_session(*, db: DbSession, now: datetime | None = None) -> str:
    now = now or utcnow()
    await db.execute(
        delete(SettingValue).where(
            SettingValue.key.startswith(_ROW_PREFIX),
            SettingValue.updated_at < now - timedelta(seconds=SESSION_TTL),
        )
    )
    raw = new_token(ADMIN_PREFIX)
    expires = now + timedelta(seconds=SESSION_TTL)
    db.add(
        SettingValue(
            key=_ROW_PREFIX + hash_token(raw),
            value=expires.isoformat(),
            encrypted=False,
            updated_at=now,
        )
    )
    await db.flush()
    return raw


async def valid_admin_session(*, db: DbSession, raw: str, now: datetime | None = None) -> bool:
    if not raw.startswith(ADMIN_PREFIX) or len(raw) > 200:
        return False
    value = await db.scalar(
        select(SettingValue.value).where(SettingValue.key == _ROW_PREFIX + hash_token(raw))
    )
    if value is None:
        return False
    try:
        expires = datetime.fromisoformat(value)
    except ValueError:
        return False
    return expires > (now or utcnow())


async def end_admin_session(*, db: DbSession, raw: str) -> None:
    await db.execute(delete(SettingValue).where(SettingValue.key == _ROW_PREFIX + hash_token(raw)))


def csrf_token(session_token: str) -> str:
    """The CSRF token of an admin session: HMAC of the session token, so nothing is stored."""
    return hmac.new(session_token.encode(), b"appleconnect admin csrf", hashlib.sha256).hexdigest()


def check_csrf(session_token: str, submitted: str) -> bool:
    return constant_time_equal(csrf_token(session_token), submitted or "")


def same_origin(settings: Settings, origin: str | None, host: str | None) -> bool:
    """``True`` unless the request says it came from another origin (``Origin`` header).

    An origin is a scheme and a host (RFC 6454): the scheme must be the public URL's, and the
    host the public URL's or the request's ``Host``. A page served over plain HTTP on the same
    host (which anyone on the path can write) is another origin.
    """
    if not origin:
        return True
    if origin == "null":
        return False
    mine = urlsplit(settings.public_url)
    theirs = urlsplit(origin)
    if theirs.scheme != mine.scheme:  # urlsplit lower-cases schemes
        return False
    netloc = theirs.netloc.lower()
    return netloc == mine.netloc.lower() or (host is not None and netloc == host.lower())
