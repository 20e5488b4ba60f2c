"""Verification of Apple's identity tokens (``id_token``).

The checks follow Apple's "Verifying a user" page (docs/apple-protocol.md#identity-token), with
the corrections real traffic forces: the algorithm is RS256 (Apple's page says "E256"), the
boolean claims arrive as ``true`` or ``"true"``, native iOS flows put SHA-256(nonce) in the
token, and clocks drift (docs/apple-protocol.md#quirk-rs256-not-e256,
docs/apple-protocol.md#quirk-email-verified-string, docs/apple-protocol.md#quirk-nonce-hashed,
docs/apple-protocol.md#quirk-clock-skew). Every check always runs; there is no switch to turn
one off.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from ._constants import APPLE_ISSUER
from ._errors import InvalidIdentityToken, InvalidToken
from ._jws import split_token, verify_rs256_parts
from ._keys import AppleKeys

__all__ = [
    "DEFAULT_LEEWAY",
    "IdentityToken",
    "averify_identity_token",
    "check_claims",
    "verify_identity_token",
]

DEFAULT_LEEWAY = 60
"""Seconds of clock skew tolerated on ``exp`` and ``iat`` (docs/pitfalls.md#pitfall-clock-skew)."""

_MAX_NONCE = 1024


class IdentityToken(NamedTuple):
    """The verified claims of an Apple identity token (immutable).

    ``email_verified`` and ``is_private_email`` are real booleans whatever form Apple sent
    (``None`` when absent). ``claims`` holds the raw payload. Email addresses must be taken from
    here, never from the unsigned ``user`` JSON of the first authorization.

    (A named tuple rather than a frozen dataclass: it is built on every sign-in, and a frozen
    dataclass's constructor costs a microsecond more; see ``benchmarks/verify.py``.)
    """

    sub: str
    audience: str
    issued_at: int
    expires_at: int
    email: str | None = None
    email_verified: bool | None = None
    is_private_email: bool | None = None
    real_user_status: int | None = None
    transfer_sub: str | None = None
    nonce: str | None = None
    nonce_supported: bool | None = None
    auth_time: int | None = None
    at_hash: str | None = None
    c_hash: str | None = None
    org_id: str | None = None
    issuer: str = APPLE_ISSUER
    claims: Mapping[str, Any] = MappingProxyType({})


def _bool_claim(payload: Mapping[str, Any], name: str, error: type[InvalidToken]) -> bool | None:
    value = payload.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise error(name, f"The claim {name!r} is neither a boolean nor 'true'/'false'.", claim=name)


def _int_claim(
    payload: Mapping[str, Any], name: str, error: type[InvalidToken], *, required: bool
) -> int | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise error(name, f"The token has no {name!r} claim.", claim=name)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(name, f"The claim {name!r} is not a number.", claim=name)
    return int(value)


def _str_claim(
    payload: Mapping[str, Any], name: str, error: type[InvalidToken], *, required: bool = False
) -> str | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise error(name, f"The token has no {name!r} claim.", claim=name)
        return None
    if not isinstance(value, str) or (required and not value):
        raise error(name, f"The claim {name!r} is not a string.", claim=name)
    return value


def oidc_hash(value: str) -> str:
    """``at_hash`` / ``c_hash``: base64url of the left half of SHA-256 (OpenID Connect 3.1.3.6)."""
    digest = hashlib.sha256(value.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def check_claims(
    payload: Mapping[str, Any],
    *,
    audiences: frozenset[str],
    now: float,
    leeway: float,
    error: type[InvalidToken],
    require_exp: bool = True,
) -> tuple[str, int, int | None]:
    """Check ``iss``, ``aud``, ``exp`` and ``iat``; return ``(aud, iat, exp)``.

    Shared with server-to-server notifications, which Apple signs and addresses the same way but
    whose example payload has no ``exp`` (``require_exp=False``: checked only when present).
    """
    if payload.get("iss") != APPLE_ISSUER:
        raise error(
            "iss", f"The token's issuer is {payload.get('iss')!r}, not {APPLE_ISSUER}.", claim="iss"
        )
    aud = payload.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str) or aud not in audiences:
        raise error(
            "aud",
            f"The token was issued to {aud!r}, which is not one of this service's client ids.",
            claim="aud",
        )
    exp = _int_claim(payload, "exp", error, required=require_exp)
    iat = _int_claim(payload, "iat", error, required=True)
    assert iat is not None
    if exp is not None and now >= exp + leeway:
        raise error("exp", f"The token expired at {exp} (now {int(now)}).", claim="exp")
    if iat > now + leeway:
        raise error(
            "iat",
            f"The token was issued in the future ({iat}, now {int(now)}); check this clock.",
            claim="iat",
        )
    return aud, iat, exp


def _check_nonce(payload: Mapping[str, Any], nonce: str) -> None:
    token_nonce = payload.get("nonce")
    if token_nonce is None:
        # Apple: "If you sent a nonce and the token has none, fail when nonce_supported is true."
        # We fail unless the platform explicitly says it does not support nonces.
        if _bool_claim(payload, "nonce_supported", InvalidIdentityToken) is False:
            return
        raise InvalidIdentityToken(
            "nonce", "A nonce was sent but the token carries none.", claim="nonce"
        )
    if not isinstance(token_nonce, str):
        raise InvalidIdentityToken("nonce", "The token's nonce is not a string.", claim="nonce")
    # Native iOS flows send SHA-256(raw nonce) to Apple and the raw nonce to the server.
    hashed = hashlib.sha256(nonce.encode("utf-8")).hexdigest()
    expected = token_nonce.encode("utf-8")
    if not (
        hmac.compare_digest(expected, nonce.encode("utf-8"))
        or hmac.compare_digest(expected, hashed.encode("ascii"))
    ):
        raise InvalidIdentityToken(
            "nonce", "The token's nonce does not match the nonce sent.", claim="nonce"
        )


def _normalise_audiences(audiences: str | Iterable[str]) -> frozenset[str]:
    if type(audiences) is frozenset and audiences:
        return audiences  # the usual case: built once from configuration
    if isinstance(audiences, str):
        audiences = (audiences,)
    result = frozenset(audiences)
    if not result or not all(isinstance(a, str) and a for a in result):
        raise ValueError(
            "audiences must name at least one client id (your Services ID and/or App ID); they "
            "come from configuration, never from the request."
        )
    return result


_STRING_BOOLS = {"true": True, "false": False}
_new_tuple = tuple.__new__
_time = time.time


def _registered_claims(
    payload: dict[str, Any], audiences: frozenset[str], now: float, leeway: float
) -> tuple[str, int, int]:
    """``aud``, ``iat`` and ``exp``, checked with ``iss``: the types Apple sends inline (this
    runs on every sign-in), anything else through :func:`check_claims`, which names the claim."""
    get = payload.get
    aud = get("aud")
    exp = get("exp")
    iat = get("iat")
    if (
        get("iss") != APPLE_ISSUER
        or type(aud) is not str
        or aud not in audiences
        or type(exp) is not int
        or type(iat) is not int
        or now >= exp + leeway
        or iat > now + leeway
    ):
        aud, iat, checked_exp = check_claims(
            payload, audiences=audiences, now=now, leeway=leeway, error=InvalidIdentityToken
        )
        assert checked_exp is not None  # required above
        exp = checked_exp
    return aud, iat, exp


def _string_bool(payload: Mapping[str, Any], name: str) -> bool | None:
    """A boolean claim Apple sent as a string: Apple sends the string "true" more often than
    the boolean (docs/apple-protocol.md#quirk-email-verified-string)."""
    value = _STRING_BOOLS.get(payload[name])
    if value is None:
        return _bool_claim(payload, name, InvalidIdentityToken)
    return value


def _unusual_claim_types(
    payload: Mapping[str, Any],
) -> tuple[bool | None, bool | None, bool | None, int | None, int | None]:
    """The optional claims when one is not of the type Apple sends: each normalised (booleans
    from strings) or refused, naming the claim. Returns ``email_verified``,
    ``is_private_email``, ``nonce_supported``, ``real_user_status`` and ``auth_time``."""
    err = InvalidIdentityToken
    for name in ("email", "transfer_sub", "nonce", "org_id", "at_hash", "c_hash"):
        _str_claim(payload, name, err)
    return (
        _bool_claim(payload, "email_verified", err),
        _bool_claim(payload, "is_private_email", err),
        _bool_claim(payload, "nonce_supported", err),
        _int_claim(payload, "real_user_status", err, required=False),
        _int_claim(payload, "auth_time", err, required=False),
    )


def _check_token_hashes(
    at_hash: str | None, c_hash: str | None, access_token: str | None, code: str | None
) -> None:
    """``at_hash`` and ``c_hash``, when the token has them and the caller gave what they hash."""
    err = InvalidIdentityToken
    if (
        access_token is not None
        and at_hash is not None
        and not hmac.compare_digest(at_hash, oidc_hash(access_token))
    ):
        raise err("at_hash", "at_hash does not match the access token.", claim="at_hash")
    if code is not None and c_hash is not None and not hmac.compare_digest(c_hash, oidc_hash(code)):
        raise err("c_hash", "c_hash does not match the authorization code.", claim="c_hash")


def _identity_from_claims(
    payload: dict[str, Any],
    audiences: frozenset[str],
    nonce: str | None,
    now: float | None,
    leeway: float,
    access_token: str | None,
    code: str | None,
) -> IdentityToken:
    # This runs on every sign-in, so the common case (claims of the JSON types Apple sends) is
    # checked inline in as few steps as possible; anything unusual goes to the helpers, which
    # either normalise it or raise naming the claim.
    err = InvalidIdentityToken
    get = payload.get
    aud, iat, exp = _registered_claims(payload, audiences, _time() if now is None else now, leeway)
    sub = get("sub")
    if type(sub) is not str or not sub:
        raise err("sub", "The token has no usable 'sub' claim.", claim="sub")
    if nonce is not None:
        _check_nonce(payload, nonce)
    email = get("email")
    email_verified = get("email_verified")
    is_private_email = get("is_private_email")
    real_user_status = get("real_user_status")
    transfer_sub = get("transfer_sub")
    token_nonce = get("nonce")
    nonce_supported = get("nonce_supported")
    auth_time = get("auth_time")
    at_hash = get("at_hash")
    c_hash = get("c_hash")
    org_id = get("org_id")
    # Apple sends the string "true" more often than the boolean
    # (docs/apple-protocol.md#quirk-email-verified-string).
    if type(email_verified) is str:
        email_verified = _string_bool(payload, "email_verified")
    if type(is_private_email) is str:
        is_private_email = _string_bool(payload, "is_private_email")
    if not (
        (email is None or type(email) is str)
        and (transfer_sub is None or type(transfer_sub) is str)
        and (token_nonce is None or type(token_nonce) is str)
        and (org_id is None or type(org_id) is str)
        and (at_hash is None or type(at_hash) is str)
        and (c_hash is None or type(c_hash) is str)
        and (email_verified is None or type(email_verified) is bool)
        and (is_private_email is None or type(is_private_email) is bool)
        and (nonce_supported is None or type(nonce_supported) is bool)
        and (real_user_status is None or type(real_user_status) is int)
        and (auth_time is None or type(auth_time) is int)
    ):
        email_verified, is_private_email, nonce_supported, real_user_status, auth_time = (
            _unusual_claim_types(payload)
        )
    if access_token is not None or code is not None:
        _check_token_hashes(at_hash, c_hash, access_token, code)
    # tuple.__new__ directly: the same object the named tuple's constructor builds, without the
    # Python-level wrapper call (this runs on every verification).
    return _new_tuple(
        IdentityToken,
        (
            sub,
            aud,
            iat,
            exp,
            email,
            email_verified,
            is_private_email,
            real_user_status,
            transfer_sub,
            token_nonce,
            nonce_supported,
            auth_time,
            at_hash,
            c_hash,
            org_id,
            APPLE_ISSUER,
            payload,
        ),
    )


def _check_nonce_argument(nonce: str | None) -> None:
    if nonce is not None and (not isinstance(nonce, str) or not nonce or len(nonce) > _MAX_NONCE):
        raise ValueError("nonce must be a non-empty string of at most 1024 characters, or None.")


def verify_identity_token(
    token: str,
    keys: AppleKeys,
    *,
    audiences: str | Iterable[str],
    nonce: str | None = None,
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
    access_token: str | None = None,
    code: str | None = None,
) -> IdentityToken:
    """Verify an identity token and return its claims; raise :class:`InvalidIdentityToken`.

    - The signature must be RS256 by the Apple key named by ``kid`` (fetched if needed).
    - ``iss`` must be ``https://appleid.apple.com``; ``aud`` one of ``audiences``.
    - ``exp`` and ``iat`` are checked against ``now`` (Unix seconds) with ``leeway``.
    - When ``nonce`` is given, the token's nonce must equal it or its SHA-256 hex digest.
    - When ``access_token`` / ``code`` are given, ``at_hash`` / ``c_hash`` are checked.

    The exception's ``reason`` names the failed check. Raises
    :class:`~appleconnect.KeysUnavailable` (an :class:`~appleconnect.AppleUnavailable`) when the
    token names a key that is not cached and Apple's keys cannot be fetched: such a token is
    undecidable, not invalid.
    """
    allowed = _normalise_audiences(audiences)
    if nonce is not None:
        _check_nonce_argument(nonce)
    parts = split_token(token, InvalidIdentityToken)
    claims = verify_rs256_parts(parts, keys.get(parts[3]), InvalidIdentityToken)
    return _identity_from_claims(claims, allowed, nonce, now, leeway, access_token, code)


async def averify_identity_token(
    token: str,
    keys: AppleKeys,
    *,
    audiences: str | Iterable[str],
    nonce: str | None = None,
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
    access_token: str | None = None,
    code: str | None = None,
) -> IdentityToken:
    """Async variant of :func:`verify_identity_token` (fetches keys without blocking)."""
    allowed = _normalise_audiences(audiences)
    if nonce is not None:
        _check_nonce_argument(nonce)
    parts = split_token(token, InvalidIdentityToken)
    key = keys.cached(parts[3]) or await keys.aget(parts[3])  # no coroutine when cached
    claims = verify_rs256_parts(parts, key, InvalidIdentityToken)
    return _identity_from_claims(claims, allowed, nonce, now, leeway, access_token, code)
