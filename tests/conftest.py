"""Shared fixtures: keys generated once per test session and tokens signed by PyJWT (an
independent implementation)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from appleconnect import _jws
from appletest import KID, jwk_for, pem_of


def _rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@pytest.fixture(scope="session")
def apple_key() -> rsa.RSAPrivateKey:
    """Stands in for Apple's current RS256 signing key."""
    return _rsa()


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    """A key that is not Apple's (an attacker's, or a rotated-out one)."""
    return _rsa()


@pytest.fixture(scope="session")
def jwks(apple_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    return {"keys": [jwk_for(apple_key, KID)]}


@pytest.fixture
def sign(apple_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    """Sign claims as Apple would (RS256 with Apple's key and kid), using PyJWT."""

    def _sign(
        claims: dict[str, Any],
        *,
        key: Any = None,
        kid: str | None = KID,
        algorithm: str = "RS256",
        headers: dict[str, Any] | None = None,
    ) -> str:
        hdrs = dict(headers or {})
        if kid is not None:
            hdrs["kid"] = kid
        return jwt.encode(
            claims, apple_key if key is None else key, algorithm=algorithm, headers=hdrs
        )

    return _sign


@pytest.fixture
def p256_pem() -> bytes:
    return pem_of(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(params=["speedups", "stdlib"])
def codec(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test with the optional accelerators (pybase64, msgspec) and without them."""
    _jws._set_speedups(request.param == "speedups")
    yield request.param
    _jws._set_speedups(True)
