"""Server-to-server notifications: verification like an identity token, and Apple's quirks in
the ``events`` claim."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from appleconnect import AppleKeys, InvalidNotification, Notification, parse_notification
from appleconnect._notifications import aparse_notification
from appletest import AUDIENCE, NOW

SUB = "001234.0a1b2c3d4e5f60718293a4b5c6d7e8f9.1234"
# Every test runs with the optional accelerators and with the standard library alone.
pytestmark = pytest.mark.usefixtures("codec")


def claims(events: Any, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "https://appleid.apple.com",
        "aud": AUDIENCE,
        "iat": NOW,
        "jti": "jti-1",
        "events": events,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def event(kind: str = "consent-revoked", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "sub": SUB, "event_time": 1508184845, **extra}


@pytest.fixture
def keys(jwks: dict[str, Any]) -> AppleKeys:
    return AppleKeys.from_jwks(jwks)


def body(token: str) -> bytes:
    return json.dumps({"payload": token}).encode()


def parse(raw: Any, keys: AppleKeys, **kw: Any) -> Notification:
    kw.setdefault("audiences", [AUDIENCE])
    kw.setdefault("now", NOW)
    return parse_notification(raw, keys, **kw)


def reason(raw: Any, keys: AppleKeys, **kw: Any) -> tuple[str, str | None]:
    with pytest.raises(InvalidNotification) as info:
        parse(raw, keys, **kw)
    return info.value.reason, info.value.claim


@pytest.mark.parametrize(
    "encode",
    [json.dumps, lambda e: e, lambda e: [e]],
    ids=["json-string", "object", "array"],
)
def test_events_as_string_object_or_array(
    sign: Callable[..., str], keys: AppleKeys, encode: Any
) -> None:
    result = parse(body(sign(claims(encode(event())))), keys)
    assert result.type == Notification.CONSENT_REVOKED
    assert result.sub == SUB
    assert result.jti == "jti-1"
    assert result.audience == AUDIENCE
    assert result.event_time == datetime.fromtimestamp(1508184845, tz=UTC)


@pytest.mark.parametrize("spelling", ["account-delete", "account-deleted"])
def test_both_deletion_spellings(sign: Callable[..., str], keys: AppleKeys, spelling: str) -> None:
    result = parse(body(sign(claims(json.dumps(event(spelling))))), keys)
    assert result.type == Notification.ACCOUNT_DELETED == "account-deleted"


def test_email_event_fields(sign: Callable[..., str], keys: AppleKeys) -> None:
    ev = event("email-disabled", email="x@privaterelay.appleid.com", is_private_email="true")
    result = parse(body(sign(claims(json.dumps(ev)))), keys)
    assert result.type == Notification.EMAIL_DISABLED
    assert result.email == "x@privaterelay.appleid.com"
    assert result.is_private_email is True


def test_event_time_in_milliseconds(sign: Callable[..., str], keys: AppleKeys) -> None:
    result = parse(body(sign(claims(json.dumps(event(event_time=1670016125295))))), keys)
    assert result.event_time == datetime.fromtimestamp(1670016125.295, tz=UTC)


def test_unknown_type_is_passed_through(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert parse(body(sign(claims(event("new-thing")))), keys).type == "new-thing"


def test_body_may_be_str_or_parsed(sign: Callable[..., str], keys: AppleKeys) -> None:
    token = sign(claims(event()))
    assert parse(body(token).decode(), keys).jti == "jti-1"
    assert parse({"payload": token}, keys).jti == "jti-1"


def test_audience_is_checked(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason(body(sign(claims(event(), aud="com.other"))), keys) == ("aud", "aud")


def test_issuer_is_checked(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason(body(sign(claims(event(), iss="https://x"))), keys) == ("iss", "iss")


def test_exp_checked_when_present(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason(body(sign(claims(event(), exp=NOW - 120))), keys) == ("exp", "exp")
    assert parse(body(sign(claims(event(), exp=NOW + 120))), keys).sub == SUB


def test_iat_in_future(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason(body(sign(claims(event(), iat=NOW + 3600))), keys) == ("iat", "iat")


def test_signature_by_another_key(
    sign: Callable[..., str], keys: AppleKeys, other_key: Any
) -> None:
    assert reason(body(sign(claims(event()), key=other_key)), keys)[0] == "signature"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json", ("malformed", None)),
        (b"[]", ("malformed", None)),
        (b"{}", ("malformed", "payload")),
        (b'{"payload": 5}', ("malformed", "payload")),
        (b"{" + b" " * 20000 + b"}", ("size", None)),
    ],
)
def test_malformed_bodies(keys: AppleKeys, raw: bytes, expected: tuple[str, Any]) -> None:
    assert reason(raw, keys) == expected


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ("{not json", ("events", "events")),
        ([], ("events", "events")),
        ([{"type": "a", "sub": "b"}, {"type": "c", "sub": "d"}], ("events", "events")),
        (5, ("events", "events")),
        ({"sub": SUB}, ("events", "type")),
        ({"type": "consent-revoked"}, ("events", "sub")),
        ({"type": "x", "sub": SUB, "event_time": "soon"}, ("events", "event_time")),
        (None, ("events", "events")),
    ],
)
def test_bad_events(
    sign: Callable[..., str], keys: AppleKeys, events: Any, expected: tuple[str, str]
) -> None:
    token = sign(claims("placeholder") | {"events": events})
    assert reason(body(token), keys) == expected


def test_jti_required(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason(body(sign(claims(event(), jti=None))), keys) == ("jti", "jti")


async def test_async_parse(sign: Callable[..., str], keys: AppleKeys) -> None:
    result = await aparse_notification(
        body(sign(claims(event("email-enabled")))), keys, audiences=AUDIENCE, now=NOW
    )
    assert result.type == Notification.EMAIL_ENABLED
