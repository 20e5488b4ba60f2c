"""Shared test helpers (constants, key and claim builders). A module of its own, not conftest,
so that test files can import it without clashing with the conftest of a sub-folder."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from appleconnect._jws import b64url_encode

AUDIENCE = "com.example.web"
APP_ID = "com.example.app"
KID = "W6WcOKB"
NOW = 1_763_700_000  # a fixed "now" (2025-11-21), injected wherever a clock is needed


def jwk_for(key: rsa.RSAPrivateKey | rsa.RSAPublicKey, kid: str) -> dict[str, str]:
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    numbers = public.public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": b64url_encode(n),
        "e": b64url_encode(e),
    }


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def apple_claims(now: int = NOW, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "https://appleid.apple.com",
        "aud": AUDIENCE,
        "exp": now + 600,
        "iat": now,
        "sub": "001234.0a1b2c3d4e5f60718293a4b5c6d7e8f9.1234",
        "c_hash": "aE7jTgnRWKOFpQzJCzp7Zg",
        "email": "ep9ks2tnph@privaterelay.appleid.com",
        "email_verified": "true",
        "is_private_email": "true",
        "auth_time": now - 5,
        "nonce_supported": True,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


class Clock:
    """A clock that tests move by hand (``clock.now += 61``) instead of waiting."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
