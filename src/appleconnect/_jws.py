"""The narrow JOSE core: strict base64url, RS256 verification and ES256 signing.

This module is deliberately small. It implements exactly the two algorithms Sign in with Apple
uses (RS256 for Apple's tokens, ES256 for the client secret) on ``cryptography``'s primitives,
because the full JOSE libraries spend most of a verification on generality we refuse anyway
(see ``benchmarks/verify.py``). It is differential-tested against PyJWT and joserfc.

Nothing here checks claims; :mod:`appleconnect._identity` and :mod:`appleconnect._notifications`
do that on what :func:`verify_rs256_parts` returns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

from ._errors import InvalidToken

# Optional accelerators (``pip install 'appleconnect[speedups]'``): SIMD base64 from pybase64 and
# JSON from msgspec, both written in C. Without them the standard library does the same work,
# with the same results; tests run both paths and compare them on random input.
try:
    from pybase64 import b64decode as _pybase64_b64decode

    _HAVE_PYBASE64 = True
except ImportError:  # pragma: no cover - depends on the installation
    _HAVE_PYBASE64 = False
try:
    from msgspec.json import Decoder as _MsgspecDecoder

    _msgspec_decode = _MsgspecDecoder().decode
    _HAVE_MSGSPEC = True
except ImportError:  # pragma: no cover - depends on the installation
    _HAVE_MSGSPEC = False

__all__ = [
    "MAX_HEADER_SEGMENT",
    "MAX_PAYLOAD_SEGMENT",
    "MAX_SIGNATURE_SEGMENT",
    "b64url_decode",
    "b64url_encode",
    "decode_unverified",
    "sign_es256",
    "speedups",
    "split_token",
    "verify_rs256_parts",
]

# Size caps on the three base64url segments of a compact JWS. Apple's identity tokens have a
# header of about 50 characters, a payload under 1 KiB and a 342-character RS256 signature; the
# caps leave room for growth while bounding the work an attacker can make us do before the
# signature check.
MAX_HEADER_SEGMENT = 1024
MAX_PAYLOAD_SEGMENT = 8192
MAX_SIGNATURE_SEGMENT = 1024

_PKCS1 = padding.PKCS1v15()
_sha256 = hashlib.sha256
_compare_digest = hmac.compare_digest
# The C scanner of the standard JSON decoder (typeshed does not declare the attribute).
_SCAN_ONCE: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# A byte table for bytes.translate: base64url's "-" and "_" become standard base64's "+" and "/",
# while "+", "/", "=" and whitespace, which base64url does not allow, become "!", which
# binascii's strict mode rejects. Translating bytes is done in C, unlike str.translate.
_TO_STD_TABLE = bytes.maketrans(b"-_+/= \t\r\n", b"+/!!!!!!!")
# The characters that may end a canonical segment, by the segment's length modulo 4: those
# whose unused low bits are zero (4 bits when 2 characters are left over, 2 bits when 3 are;
# a length of 1 modulo 4 is never valid).
_CANONICAL_LAST: tuple[frozenset[str], ...] = (
    frozenset(_ALPHABET.decode()),
    frozenset(),
    frozenset(_ALPHABET.decode()[::16]),
    frozenset(_ALPHABET.decode()[::4]),
)
_PAD = ("", "", "==", "=")
_PAD_BYTES = (b"", b"", b"==", b"=")


class _Malformed(Exception):
    """Internal: a segment is not canonical base64url or not a JSON object."""


def b64url_encode(data: bytes) -> str:
    """Encode ``data`` as unpadded base64url (RFC 7515, section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode_stdlib(segment: str) -> bytes:
    """Decode unpadded, canonical base64url; raise :class:`ValueError` on anything else.

    Canonical means that the unused low bits of the last character are zero. Without that check
    several encodings decode to the same bytes, so a changed token could still verify.
    """
    rem = len(segment) & 3
    if rem and segment[-1] not in _CANONICAL_LAST[rem]:
        raise ValueError("not canonical base64url")
    try:
        return binascii.a2b_base64(
            segment.encode("ascii").translate(_TO_STD_TABLE) + _PAD_BYTES[rem], strict_mode=True
        )
    except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
        raise ValueError("not base64url") from None


def _b64url_decode_pybase64(segment: str) -> bytes:
    """:func:`_b64url_decode_stdlib` on pybase64: the same results, several times faster."""
    rem = len(segment) & 3
    if rem and segment[-1] not in _CANONICAL_LAST[rem]:
        raise ValueError("not canonical base64url")
    # With altchars, pybase64 (like the standard library's b64decode) also accepts "+" and "/";
    # base64url does not, and "=" never appears in a JWS segment.
    if "+" in segment or "/" in segment or "=" in segment:
        raise ValueError("not base64url")
    try:
        # Positional arguments: keyword parsing would cost as much as the decoding itself.
        return _pybase64_b64decode(segment + _PAD[rem], b"-_", True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise ValueError("not base64url") from None


def _json_object_stdlib(data: bytes) -> dict[str, Any]:
    # The decoder's scanner, called directly, parses exactly one JSON value from the first
    # character; text before or after it (even white space, which Apple never sends) is refused.
    try:
        text = data.decode("utf-8")
        value, end = _SCAN_ONCE(text, 0)
    except (ValueError, StopIteration, RecursionError) as exc:
        raise _Malformed(str(exc)) from None
    if type(value) is not dict or end != len(text):
        raise _Malformed("not a single JSON object")
    return value


def _json_object_msgspec(data: bytes) -> dict[str, Any]:
    # msgspec agrees with the standard library on every document it accepts, but it refuses a
    # few that the standard library takes (NaN, lone surrogates) and allows white space around
    # the value: anything that is not plainly "{...}" and accepted goes to the standard library,
    # so the result is always the standard library's.
    try:
        if data[0] == 0x7B and data[-1] == 0x7D:  # "{" and "}": an object, nothing around it
            return _msgspec_decode(data)  # type: ignore[no-any-return]
    except (IndexError, ValueError):  # empty; msgspec.DecodeError, UnicodeDecodeError
        pass
    return _json_object_stdlib(data)


b64url_decode = _b64url_decode_stdlib
_json_object = _json_object_stdlib


def _set_speedups(enabled: bool) -> None:
    """Use the accelerators when ``enabled`` and installed, else the standard library.

    They are used whenever installed; tests and ``benchmarks/verify.py`` switch them off to run
    and measure the standard-library path in the same process.
    """
    global b64url_decode, _json_object
    fast_b64 = enabled and _HAVE_PYBASE64
    fast_json = enabled and _HAVE_MSGSPEC
    b64url_decode = _b64url_decode_pybase64 if fast_b64 else _b64url_decode_stdlib
    _json_object = _json_object_msgspec if fast_json else _json_object_stdlib


_set_speedups(True)


def speedups() -> dict[str, bool]:
    """Which optional accelerators are in use (``pip install 'appleconnect[speedups]'``)."""
    return {
        "pybase64": b64url_decode is _b64url_decode_pybase64,
        "msgspec": _json_object is _json_object_msgspec,
    }


def _decode_json_segment(segment: str) -> dict[str, Any]:
    try:
        data = b64url_decode(segment)
    except ValueError as exc:
        raise _Malformed(str(exc)) from None
    return _json_object(data)


# The kid of parsed headers, keyed by their base64url text. Apple signs every token with one of a
# few keys, so the same few header segments come back again and again; parsing is deterministic,
# so the cache cannot change any result. It is bounded, and cleared when full.
_HEADER_CACHE: dict[str, str] = {}
_HEADER_CACHE_MAX = 256
_MAX_TOKEN = MAX_HEADER_SEGMENT + MAX_PAYLOAD_SEGMENT + MAX_SIGNATURE_SEGMENT + 2


def _header_kid(segment: str, error: type[InvalidToken]) -> str:
    """Parse a header segment: it must ask for RS256, have no ``crit`` and name a ``kid``."""
    try:
        header = _decode_json_segment(segment)
    except _Malformed:
        raise error("malformed", "The token header is not base64url-encoded JSON.") from None
    alg = header.get("alg")
    if alg != "RS256":
        raise error(
            "alg",
            f"The token asks for algorithm {alg!r}; Apple signs only with RS256.",
        )
    if "crit" in header:
        raise error("header", "The token header has critical extensions ('crit'); refused.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise error("kid", "The token header has no usable 'kid'.", claim="kid")
    if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[segment] = kid
    return kid


def _refuse_segments(
    token: object, payload: str, signature: str, dot: str, error: type[InvalidToken]
) -> NoReturn:
    """Raise the error that names what is wrong with the token's shape (the slow path)."""
    if type(token) is not str:
        raise error("malformed", "The token must be a string.")
    if len(token) > _MAX_TOKEN:
        raise error("size", "The token is larger than any token Apple issues.")
    if not dot or "." in payload:
        raise error("malformed", "The token is not a compact JWS (three dot-separated parts).")
    for part, length, cap in (
        ("header", len(token.partition(".")[0]), MAX_HEADER_SEGMENT),
        ("payload", len(payload), MAX_PAYLOAD_SEGMENT),
        ("signature", len(signature), MAX_SIGNATURE_SEGMENT),
    ):
        if length > cap:
            raise error("size", f"The token {part} is too large.")
    raise error("malformed", "The token is not ASCII text.")


def split_token(token: str, error: type[InvalidToken]) -> tuple[str, str, str, str]:
    """Split a compact JWS into its segments, enforcing the size caps.

    Returns ``(signing_input, payload, signature, kid)``: the signing input is
    ``header.payload``, the text the signature covers; the header has been checked to ask for
    RS256 and to name ``kid``.
    """
    if type(token) is str and len(token) <= _MAX_TOKEN:
        # Two partitions rather than a split: no list, and the signing input comes out whole.
        signing_input, _, signature = token.rpartition(".")
        header, dot, payload = signing_input.partition(".")
        if (
            not dot
            or "." in payload
            or len(payload) > MAX_PAYLOAD_SEGMENT
            or len(signature) > MAX_SIGNATURE_SEGMENT
            or not token.isascii()  # O(1): CPython records it
        ):
            _refuse_segments(token, payload, signature, dot, error)
    else:
        _refuse_segments(token, "", "", "", error)
    kid = _HEADER_CACHE.get(header)  # a cached header has passed every check below
    if kid is None:
        if len(header) > MAX_HEADER_SEGMENT:
            raise error("size", "The token header is too large.")
        kid = _header_kid(header, error)
    return signing_input, payload, signature, kid


# DER of the DigestInfo prefix for SHA-256 (RFC 8017, section 9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


# The signature length each key requires (its modulus in bytes), by id(key): reading
# key.key_size asks OpenSSL every time, which costs as much as the rest of the length check.
# Each entry holds its key, and a hit must be that very key, so a reused id cannot mislead.
_MODULUS_BYTES: dict[int, tuple[RSAPublicKey, int]] = {}


def _modulus_bytes(key: RSAPublicKey) -> int:
    if len(_MODULUS_BYTES) >= 64:  # Apple publishes a few keys at a time; rotation is rare
        _MODULUS_BYTES.clear()
    size = (key.key_size + 7) // 8
    _MODULUS_BYTES[id(key)] = (key, size)
    return size


def _pkcs1_sha256_valid(key: RSAPublicKey, signature: bytes, digest: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 verification with SHA-256 (RFC 8017, section 8.2.2).

    OpenSSL applies the RSA public operation and checks the block type 1 padding
    (``00 01 FF..FF 00``, at least eight ``FF``); we then compare what follows the padding with
    the expected ``DigestInfo`` in constant time. That is steps 2 to 4 of section 8.2.2 (the
    encoded message is fully determined by its length and this suffix), and it is about 10 %
    faster than ``key.verify`` because no hash context is set up inside OpenSSL. Differential
    tests check it against ``key.verify`` and PyJWT.
    """
    entry = _MODULUS_BYTES.get(id(key))
    size = entry[1] if entry is not None and entry[0] is key else _modulus_bytes(key)
    if len(signature) != size:  # RFC 8017, 8.2.2, step 1 (OpenSSL would take shorter input)
        return False
    try:
        recovered = key.recover_data_from_signature(signature, _PKCS1, None)
    except (InvalidSignature, ValueError):
        return False
    return _compare_digest(recovered, _SHA256_DIGEST_INFO + digest)


def verify_rs256_parts(
    parts: tuple[str, str, str, str],
    key: RSAPublicKey | None,
    error: type[InvalidToken],
) -> dict[str, Any]:
    """Check the RS256 signature of the segments :func:`split_token` returned, with the key
    found for their ``kid`` (``None``: no such key), and return the decoded payload."""
    signing_input, payload, signature, kid = parts
    if key is None:
        raise error("kid", f"No Apple key has kid {kid!r}, even after re-fetching.", claim="kid")
    try:
        raw_signature = b64url_decode(signature)
    except ValueError:
        raise error("malformed", "The token signature is not canonical base64url.") from None
    digest = _sha256(signing_input.encode()).digest()  # ASCII: split_token checked
    if not _pkcs1_sha256_valid(key, raw_signature, digest):
        raise error("signature", "The token signature does not verify with Apple's key.")
    # Only reachable for a token that Apple's key really signed.
    try:
        return _json_object(b64url_decode(payload))
    except (ValueError, _Malformed):
        raise error("malformed", "The token payload is not base64url-encoded JSON.") from None


def sign_es256(
    header: dict[str, Any], claims: dict[str, Any], key: ec.EllipticCurvePrivateKey
) -> str:
    """Return a compact ES256 JWS. The signature is raw ``R || S`` (64 bytes), as RFC 7518,
    section 3.4 requires and Apple enforces; ``cryptography`` produces DER, so it is converted."""
    signing_input = (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Header, claims and raw signature of a compact JWS, without verifying anything."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ValueError("it is not a JWT (three dot-separated parts)")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        raise ValueError("it is not base64url-encoded JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("its header or claims are not JSON objects")
    return header, claims, signature
