"""The narrow JOSE core, differential-tested against cryptography's own verify and PyJWT."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appleconnect import _jws
from appleconnect._jws import _pkcs1_sha256_valid, b64url_decode, b64url_encode, sign_es256


def reference_verify(key: rsa.RSAPublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.binary(max_size=512), flip=st.integers(0, 255))
def test_pkcs1_verifier_agrees_with_cryptography(
    apple_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, message: bytes, flip: int
) -> None:
    public = apple_key.public_key()
    digest = hashlib.sha256(message).digest()
    good = apple_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    bad = bytearray(good)
    bad[flip] ^= 0x01
    foreign = other_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    sha384 = apple_key.sign(message, padding.PKCS1v15(), hashes.SHA384())
    pss = apple_key.sign(
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    for signature in (good, bytes(bad), foreign, sha384, pss, good[:-1], good + b"\0", b""):
        assert _pkcs1_sha256_valid(public, signature, digest) == reference_verify(
            public, signature, message
        )
    assert _pkcs1_sha256_valid(public, good, digest)


def test_pkcs1_verifier_rejects_random_signatures(apple_key: rsa.RSAPrivateKey) -> None:
    public = apple_key.public_key()
    digest = hashlib.sha256(b"m").digest()
    for seed in range(50):
        signature = hashlib.sha512(bytes([seed])).digest() * 4
        assert not _pkcs1_sha256_valid(public, signature, digest)


@given(data=st.binary(max_size=300))
def test_b64url_roundtrip_matches_the_standard_library(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert encoded == base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert b64url_decode(encoded) == data


@pytest.mark.parametrize(
    "segment",
    ["a", "ab=", "ab==", "a+b/", "a b", "YQ\n", "é", "AB", "ABC", "QR", "QUJ"],
)
def test_b64url_rejects_non_canonical_or_foreign_input(segment: str) -> None:
    # "AB" and "ABC" have non-zero unused bits ("AA" and "AAA"... are the canonical forms of
    # their byte values only when those bits are zero); "QR" and "QUJ" likewise.
    with pytest.raises(ValueError, match="base64"):
        b64url_decode(segment)


def test_es256_signature_is_raw_and_verifies_under_pyjwt() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = sign_es256({"alg": "ES256", "kid": "K"}, {"sub": "x"}, key)
    assert len(b64url_decode(token.split(".")[2])) == 64
    assert jwt.decode(token, key.public_key(), algorithms=["ES256"]) == {"sub": "x"}


# -- the optional accelerators give exactly the standard library's results --------------------

# The characters that matter to a base64url decoder: its alphabet (including the letters whose
# low bits decide canonicity), standard base64's "+" "/" "=", white space, a dot, non-ASCII.
_SEGMENT_TEXT = st.text(alphabet="AQgwBRhxEIMYc048-_+/= \n.\u00e9\x00", max_size=40)


def _outcome(decode: Callable[[str], bytes], segment: str) -> bytes | str:
    try:
        return decode(segment)
    except ValueError as exc:
        return f"ValueError: {exc}"


def test_the_accelerators_are_installed_for_the_tests() -> None:
    # The dev extra installs them; without them half of these comparisons would compare the
    # standard library with itself.
    assert _jws.speedups() == {"pybase64": True, "msgspec": True}


@settings(max_examples=400)
@given(segment=_SEGMENT_TEXT | st.binary(max_size=60).map(b64url_encode))
def test_pybase64_decoder_agrees_with_the_standard_library(segment: str) -> None:
    assert _outcome(_jws._b64url_decode_pybase64, segment) == _outcome(
        _jws._b64url_decode_stdlib, segment
    )


def _json_outcome(parse: Callable[[bytes], dict[str, Any]], data: bytes) -> str:
    # repr, not ==: it tells 0 from 0.0 from -0.0 and True from 1, and NaN equals itself.
    try:
        return repr(parse(data))
    except _jws._Malformed:
        return "malformed"


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300)
@given(
    document=st.dictionaries(st.text(max_size=8), _JSON_VALUES, max_size=6),
    before=st.sampled_from(["", " ", "\n", "x"]),
    after=st.sampled_from(["", " ", "\t", "}", "{}"]),
    ensure_ascii=st.booleans(),
)
def test_msgspec_parser_agrees_with_the_standard_library(
    document: dict[str, Any], before: str, after: str, ensure_ascii: bool
) -> None:
    data = (before + json.dumps(document, ensure_ascii=ensure_ascii) + after).encode(
        "utf-8", "surrogatepass"
    )
    assert _json_outcome(_jws._json_object_msgspec, data) == _json_outcome(
        _jws._json_object_stdlib, data
    )


@settings(max_examples=300)
@given(data=st.binary(max_size=40).map(lambda b: b"{" + b + b"}") | st.binary(max_size=40))
def test_msgspec_parser_agrees_on_arbitrary_bytes(data: bytes) -> None:
    assert _json_outcome(_jws._json_object_msgspec, data) == _json_outcome(
        _jws._json_object_stdlib, data
    )


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',  # duplicate names: the last wins in both
        b'{"a":"\\ud800"}',  # a lone surrogate escape: msgspec refuses, the stdlib takes it
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b'{"a":123456789012345678901234567890}',  # beyond 64 bits: still an int
        b'{"a":-9223372036854775809}',
        b'{"a":1e400}',
        b'{"a":-0}',
        b'{"a":-0.0}',
        b'{"a":1.5e-320}',
        b'{"a":"\xed\xa0\x80"}',  # UTF-8 of a surrogate
        b'{"a":"\x01"}',  # a raw control character
        b'{"a":01}',
        b" {}",
        b"{} ",
        b"{}",
        b"",
        b"[]",
        b'{"a":[1,{"b":null}]}',
    ],
)
def test_msgspec_parser_agrees_on_the_corner_cases(data: bytes) -> None:
    assert _json_outcome(_jws._json_object_msgspec, data) == _json_outcome(
        _jws._json_object_stdlib, data
    )


def test_without_the_accelerators_installed_the_standard_library_is_used() -> None:
    # A fresh interpreter in which importing pybase64 and msgspec fails, as on an installation
    # without the "speedups" extra: verification still works, on the standard library.
    apple = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        {"iss": "https://appleid.apple.com", "aud": "a.b", "sub": "s", "iat": 1, "exp": 2},
        apple,
        algorithm="RS256",
        headers={"kid": "K"},
    )
    numbers = apple.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": "K",
        "n": b64url_encode(numbers.n.to_bytes(256, "big")),
        "e": "AQAB",
    }
    script = f"""
import sys
sys.modules["pybase64"] = None
sys.modules["msgspec"] = None
from appleconnect import AppleKeys, verify_identity_token
from appleconnect._jws import speedups
keys = AppleKeys.from_jwks({{"keys": [{jwk!r}]}})
print(speedups(), verify_identity_token({token!r}, keys, audiences="a.b", now=1).sub)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "{'pybase64': False, 'msgspec': False} s"


def test_signature_length_is_each_keys_own(apple_key: rsa.RSAPrivateKey) -> None:
    # RFC 8017, 8.2.2, step 1: a signature must have exactly the modulus' length. OpenSSL's
    # recovery takes a shorter one (the same number without its leading zero byte), so the
    # length is ours to check, per key, even when key objects come and go and ids are reused.
    larger = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    for private in (apple_key, larger):
        index = 0
        while True:  # find a signature that starts with a zero byte (1 in 256)
            message = b"m%d" % index
            signature = private.sign(message, padding.PKCS1v15(), hashes.SHA256())
            if signature[0] == 0:
                break
            index += 1
        digest = hashlib.sha256(message).digest()
        recovered = private.public_key().recover_data_from_signature(
            signature[1:], padding.PKCS1v15(), None
        )
        assert recovered.endswith(digest)  # what OpenSSL alone would accept
        for _ in range(3):  # fresh key objects: their ids may be ones seen before
            public = private.public_key()
            assert _pkcs1_sha256_valid(public, signature, digest)
            assert not _pkcs1_sha256_valid(public, signature[1:], digest)
            assert not _pkcs1_sha256_valid(public, b"\0" + signature, digest)
