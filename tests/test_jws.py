"""The narrow JOSE core, differential-tested against cryptography's own verify and PyJWT."""

from __future__ import annotations

import base64
import hashlib

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
