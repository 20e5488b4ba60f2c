"""The client secret: key loading, identifier checks, the JWT's exact shape, caching, and
cross-checks with PyJWT and joserfc as ES256 verifiers."""

from __future__ import annotations

import json
import threading
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jws as jose_jws
from joserfc.jwk import ECKey

from appleconnect import ClientSecret
from appleconnect._jws import b64url_decode
from appletest import pem_of

TEAM = "ABCDE12345"
KEY_ID = "KEY1234567"
CLIENT = "com.example.web"


class Clock:
    def __init__(self, now: float = 1_763_700_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def pem(ec_key: ec.EllipticCurvePrivateKey) -> str:
    return pem_of(ec_key).decode()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, payload, signature = token.split(".")
    return (
        json.loads(b64url_decode(header)),
        json.loads(b64url_decode(payload)),
        b64url_decode(signature),
    )


def test_token_has_exactly_the_header_and_claims_apple_requires(pem: str) -> None:
    clock = Clock()
    secret = ClientSecret(TEAM, KEY_ID, CLIENT, pem, ttl=3600, clock=clock)
    header, claims, signature = parts(secret.token)
    assert header == {"alg": "ES256", "kid": KEY_ID}
    assert claims == {
        "iss": TEAM,
        "iat": 1_763_700_000 - 5,
        "exp": 1_763_700_000 + 3600,
        "aud": "https://appleid.apple.com",
        "sub": CLIENT,
    }
    assert isinstance(claims["iat"], int)
    assert len(signature) == 64  # raw R||S, not DER (which starts with 0x30 and is ~70 bytes)
    assert str(secret) == secret.token


def test_signature_verifies_under_pyjwt_and_joserfc(
    pem: str, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    clock = Clock(__import__("time").time())
    token = ClientSecret(TEAM, KEY_ID, CLIENT, pem, clock=clock).token
    decoded = jwt.decode(
        token, ec_key.public_key(), algorithms=["ES256"], audience="https://appleid.apple.com"
    )
    assert decoded["sub"] == CLIENT
    public_pem = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    result = jose_jws.deserialize_compact(token, ECKey.import_key(public_pem), ["ES256"])
    assert json.loads(result.payload)["iss"] == TEAM


def test_maximum_ttl_is_apples_limit(pem: str) -> None:
    clock = Clock()
    secret = ClientSecret(TEAM, KEY_ID, CLIENT, pem, ttl=15_777_000, clock=clock)
    _, claims, _ = parts(secret.token)
    assert claims["exp"] - clock.now <= 15_777_000
    with pytest.raises(ValueError, match="six months"):
        ClientSecret(TEAM, KEY_ID, CLIENT, pem, ttl=15_777_001)
    with pytest.raises(ValueError, match="between 60"):
        ClientSecret(TEAM, KEY_ID, CLIENT, pem, ttl=10)
    with pytest.raises(TypeError, match="integer"):
        ClientSecret(TEAM, KEY_ID, CLIENT, pem, ttl=3600.5)  # type: ignore[arg-type]


def test_token_is_cached_and_reminted_before_expiry(pem: str) -> None:
    clock = Clock()
    secret = ClientSecret(TEAM, KEY_ID, CLIENT, pem, ttl=3600, clock=clock)
    first = secret.token
    clock.now += 2000
    assert secret.token == first
    assert secret.expires_at == 1_763_700_000 + 3600
    clock.now = 1_763_700_000 + 3600 - 300  # within the refresh margin (360 s for 1 h)
    second = secret.token
    assert second != first
    assert parts(second)[1]["iat"] == int(clock.now) - 5


def test_minting_is_thread_safe(pem: str) -> None:
    secret = ClientSecret(TEAM, KEY_ID, CLIENT, pem, clock=Clock())
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(secret.token)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p.replace("\n", "\\n"),  # literal \n from an environment variable
        lambda p: p.rstrip("\n"),  # no trailing newline
        lambda p: "  \n" + p + "\n\n  ",  # surrounding whitespace
        lambda p: p.replace("\n", "\r\n"),  # CRLF
        lambda p: p.replace("\n", " "),  # folded onto one line
        lambda p: '"' + p.replace("\n", "\\n") + '"',  # quoted, as in a .env file
    ],
)
def test_common_pem_mangling_is_tolerated(pem: str, mangle: Any) -> None:
    reference = ClientSecret(TEAM, KEY_ID, CLIENT, pem)
    mangled = ClientSecret(TEAM, KEY_ID, CLIENT, mangle(pem))
    assert mangled.fingerprint == reference.fingerprint


def test_bytes_key_is_accepted(pem: str) -> None:
    assert ClientSecret(TEAM, KEY_ID, CLIENT, pem.encode()).client_id == CLIENT


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("hello", "not PEM"),
        ("MIGTAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBHkwdwIBAQQg", "not PEM"),
        ("-----BEGIN PRIVATE KEY-----\nMIGT\n", "END"),
        ("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----", "damaged"),
        (b"\xff\xfe\x00", "binary"),
    ],
)
def test_bad_keys_are_rejected_with_the_reason(key: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClientSecret(TEAM, KEY_ID, CLIENT, key)


def test_rsa_key_is_rejected() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ValueError, match="RSA private key"):
        ClientSecret(TEAM, KEY_ID, CLIENT, pem_of(key))
    traditional = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="RSA private key"):
        ClientSecret(TEAM, KEY_ID, CLIENT, traditional)


def test_wrong_curve_is_rejected() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match=r"secp384r1.*P-256"):
        ClientSecret(TEAM, KEY_ID, CLIENT, pem_of(key))


def test_other_key_types_are_rejected() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="P-256"):
        ClientSecret(TEAM, KEY_ID, CLIENT, pem)


def test_public_key_and_encrypted_key_are_rejected(ec_key: ec.EllipticCurvePrivateKey) -> None:
    public = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="public key, not a private key"):
        ClientSecret(TEAM, KEY_ID, CLIENT, public)
    encrypted = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ValueError, match="encrypted"):
        ClientSecret(TEAM, KEY_ID, CLIENT, encrypted)


@pytest.mark.parametrize("team", ["ABCDE1234", "ABCDE123456", "abcde12345", "ABCDE-2345", ""])
def test_team_id_must_be_ten_characters(pem: str, team: str) -> None:
    with pytest.raises(ValueError, match="Team ID must be the 10-character"):
        ClientSecret(team, KEY_ID, CLIENT, pem)


@pytest.mark.parametrize("key_id", ["KEY123456", "KEY12345678"])
def test_key_id_must_be_ten_characters(pem: str, key_id: str) -> None:
    with pytest.raises(ValueError, match="Key ID must be the 10-character"):
        ClientSecret(TEAM, key_id, CLIENT, pem)


def test_client_id_must_not_contain_the_team_id(pem: str) -> None:
    with pytest.raises(ValueError, match="contains the Team ID"):
        ClientSecret(TEAM, KEY_ID, f"{TEAM}.com.example.web", pem)


@pytest.mark.parametrize("client_id", ["", " com.example.web", "com.example web", "a\nb"])
def test_client_id_must_be_exact(pem: str, client_id: str) -> None:
    with pytest.raises(ValueError, match="client id"):
        ClientSecret(TEAM, KEY_ID, client_id, pem)


def test_repr_does_not_leak_the_key(pem: str) -> None:
    text = repr(ClientSecret(TEAM, KEY_ID, CLIENT, pem))
    assert "PRIVATE" not in text
    assert TEAM in text
    assert "P-256" in text


def test_with_client_id_shares_the_key(pem: str) -> None:
    clock = Clock()
    web = ClientSecret(TEAM, KEY_ID, CLIENT, pem, clock=clock)
    app = web.with_client_id("com.example.app")
    assert parts(app.token)[1]["sub"] == "com.example.app"
    assert app.fingerprint == web.fingerprint
    with pytest.raises(ValueError, match="Team ID"):
        web.with_client_id(f"{TEAM}.x")


def test_from_file(tmp_path: Any, pem: str) -> None:
    path = tmp_path / f"AuthKey_{KEY_ID}.p8"
    path.write_text(pem)
    assert ClientSecret.from_file(TEAM, KEY_ID, CLIENT, str(path)).client_id == CLIENT
