"""Server-to-server notifications: Apple's ``POST {"payload": JWT}`` to your endpoint.

docs/apple-protocol.md#notifications. The JWT is signed with the same keys as identity tokens and
verified the same way, ``aud`` included (the Go library skips it; we do not). The ``events``
claim is a single event that real payloads carry as a JSON-encoded *string*, while Apple's
example shows an object; both, and a one-element array, are accepted. Account deletion is
spelled ``account-delete`` and ``account-deleted`` by different Apple documents; both map to
:attr:`Notification.ACCOUNT_DELETED`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from ._errors import InvalidNotification
from ._identity import DEFAULT_LEEWAY, _bool_claim, _normalise_audiences, check_claims
from ._jws import split_token, verify_rs256_parts
from ._keys import AppleKeys

__all__ = ["Notification", "aparse_notification", "parse_notification"]

MAX_BODY_BYTES = 16 * 1024
_MAX_EVENTS_CHARS = 4096
# event_time values above this are milliseconds: 10^11 seconds is the year 5138.
_MILLISECONDS_THRESHOLD = 100_000_000_000


@dataclass(frozen=True, slots=True)
class Notification:
    """A verified server-to-server notification.

    ``type`` is one of the class constants (deletion spellings unified) or, for a type Apple adds
    later, Apple's string unchanged: answer 200 and ignore what you do not handle. ``jti`` is
    unique per notification: de-duplicate on it, because deliveries may repeat.
    """

    EMAIL_DISABLED: ClassVar[str] = "email-disabled"
    EMAIL_ENABLED: ClassVar[str] = "email-enabled"
    CONSENT_REVOKED: ClassVar[str] = "consent-revoked"
    ACCOUNT_DELETED: ClassVar[str] = "account-deleted"

    type: str
    sub: str
    jti: str
    audience: str
    issued_at: int
    event_time: datetime | None = None
    email: str | None = None
    is_private_email: bool | None = None
    event: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _extract_payload(body: bytes | str | Mapping[str, Any]) -> str:
    err = InvalidNotification
    if isinstance(body, bytes | str):
        if len(body) > MAX_BODY_BYTES:
            raise err("size", "The notification body is larger than any Apple sends.")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the stack
            raise err("malformed", "The notification body is not JSON.") from None
    else:
        document = body
    if not isinstance(document, Mapping):
        raise err("malformed", "The notification body is not a JSON object.")
    payload = document.get("payload")
    if not isinstance(payload, str) or not payload:
        raise err("malformed", "The notification body has no 'payload' string.", claim="payload")
    return payload


def _parse_events(raw: object) -> dict[str, Any]:
    err = InvalidNotification
    if isinstance(raw, str):
        if len(raw) > _MAX_EVENTS_CHARS:
            raise err("size", "The 'events' claim is too large.", claim="events")
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raise err("events", "The 'events' claim is not JSON.", claim="events") from None
    if isinstance(raw, list):
        if len(raw) != 1:
            raise err("events", "The 'events' claim must hold exactly one event.", claim="events")
        raw = raw[0]
    if not isinstance(raw, dict):
        raise err("events", "The 'events' claim is not an event object.", claim="events")
    return raw


def _event_time(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidNotification("events", "event_time is not a number.", claim="event_time")
    seconds = value / 1000 if value >= _MILLISECONDS_THRESHOLD else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidNotification(
            "events", "event_time is out of range.", claim="event_time"
        ) from None


def _notification_from_claims(
    claims: dict[str, Any], *, audiences: frozenset[str], now: float | None, leeway: float
) -> Notification:
    err = InvalidNotification
    aud, iat, _ = check_claims(
        claims,
        audiences=audiences,
        now=time.time() if now is None else now,
        leeway=leeway,
        error=err,
        require_exp=False,  # Apple's example payload has none; libraries report seeing one
    )
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise err("jti", "The notification has no usable 'jti'.", claim="jti")
    event = _parse_events(claims.get("events"))
    kind = event.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise err("events", "The event has no 'type'.", claim="type")
    if kind in ("account-delete", "account-deleted"):
        kind = Notification.ACCOUNT_DELETED
    sub = event.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise err("events", "The event has no 'sub'.", claim="sub")
    email = event.get("email")
    if email is not None and not isinstance(email, str):
        raise err("events", "The event's email is not a string.", claim="email")
    return Notification(
        type=kind,
        sub=sub,
        jti=jti,
        audience=aud,
        issued_at=iat,
        event_time=_event_time(event.get("event_time")),
        email=email,
        is_private_email=_bool_claim(event, "is_private_email", err),
        event=event,
        claims=claims,
    )


def parse_notification(
    body: bytes | str | Mapping[str, Any],
    keys: AppleKeys,
    *,
    audiences: str | Iterable[str],
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
) -> Notification:
    """Verify and parse a server-to-server notification body; raise :class:`InvalidNotification`.

    ``body`` is the raw request body (or its parsed JSON). ``audiences`` are your client ids.
    Raises :class:`~appleconnect.KeysUnavailable` when the token names a key that is not cached
    and Apple's keys cannot be fetched: answer 503 with ``Retry-After`` so that Apple retries.
    """
    allowed = _normalise_audiences(audiences)
    parts = split_token(_extract_payload(body), InvalidNotification)
    claims = verify_rs256_parts(parts, keys.get(parts[3]), InvalidNotification)
    return _notification_from_claims(claims, audiences=allowed, now=now, leeway=leeway)


async def aparse_notification(
    body: bytes | str | Mapping[str, Any],
    keys: AppleKeys,
    *,
    audiences: str | Iterable[str],
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
) -> Notification:
    """Async variant of :func:`parse_notification`."""
    allowed = _normalise_audiences(audiences)
    parts = split_token(_extract_payload(body), InvalidNotification)
    key = keys.cached(parts[3]) or await keys.aget(parts[3])  # no coroutine when cached
    claims = verify_rs256_parts(parts, key, InvalidNotification)
    return _notification_from_claims(claims, audiences=allowed, now=now, leeway=leeway)
