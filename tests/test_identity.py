"""Identity-token verification: the attack catalogue, claim handling, and differential tests
against PyJWT and joserfc (independent implementations)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from appleconnect import AppleKeys, IdentityToken, InvalidIdentityToken, verify_identity_token
from appleconnect._identity import averify_identity_token, oidc_hash
from appleconnect._jws import b64url_encode
from appletest import APP_ID, AUDIENCE, KID, NOW, apple_claims, jwk_for

AUDS = (AUDIENCE, APP_ID)
# Every test runs with the optional accelerators and with the standard library alone.
pytestmark = pytest.mark.usefixtures("codec")


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def keys(jwks: dict[str, Any]) -> AppleKeys:
    return AppleKeys.from_jwks(jwks)


def verify(token: str, keys: AppleKeys, **kw: Any) -> IdentityToken:
    kw.setdefault("audiences", AUDS)
    kw.setdefault("now", NOW)
    return verify_identity_token(token, keys, **kw)


def reason_of(token: str, keys: AppleKeys, **kw: Any) -> tuple[str, str | None]:
    with pytest.raises(InvalidIdentityToken) as info:
        verify(token, keys, **kw)
    return info.value.reason, info.value.claim


# -- the happy path ---------------------------------------------------------------------------


def test_valid_token_gives_typed_claims(sign: Callable[..., str], keys: AppleKeys) -> None:
    token = sign(apple_claims(nonce="n-123", transfer_sub="760417.ab.1827", real_user_status=2))
    result = verify(token, keys, nonce="n-123")
    assert result.sub == "001234.0a1b2c3d4e5f60718293a4b5c6d7e8f9.1234"
    assert result.audience == AUDIENCE
    assert result.email == "ep9ks2tnph@privaterelay.appleid.com"
    assert result.email_verified is True
    assert result.is_private_email is True
    assert result.real_user_status == 2
    assert result.transfer_sub == "760417.ab.1827"
    assert result.nonce == "n-123"
    assert result.nonce_supported is True
    assert result.auth_time == NOW - 5
    assert result.issued_at == NOW
    assert result.expires_at == NOW + 600
    assert result.claims["c_hash"] == "aE7jTgnRWKOFpQzJCzp7Zg"


@pytest.mark.parametrize(
    ("sent", "expected"),
    [(True, True), ("true", True), (False, False), ("false", False), ("TRUE", True), (None, None)],
)
def test_boolean_claims_are_booleans_whatever_apple_sent(
    sign: Callable[..., str], keys: AppleKeys, sent: object, expected: bool | None
) -> None:
    token = sign(apple_claims(email_verified=sent, is_private_email=sent))
    result = verify(token, keys)
    assert result.email_verified is expected
    assert result.is_private_email is expected


def test_string_boolean_other_than_true_false_is_rejected(
    sign: Callable[..., str], keys: AppleKeys
) -> None:
    assert reason_of(sign(apple_claims(email_verified="yes")), keys) == (
        "email_verified",
        "email_verified",
    )


def test_app_id_and_services_id_both_accepted(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert verify(sign(apple_claims(aud=APP_ID)), keys).audience == APP_ID
    assert verify(sign(apple_claims(aud=AUDIENCE)), keys).audience == AUDIENCE


def test_audiences_may_be_a_single_string(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert verify(sign(apple_claims()), keys, audiences=AUDIENCE).audience == AUDIENCE


def test_empty_audiences_is_a_configuration_error(
    sign: Callable[..., str], keys: AppleKeys
) -> None:
    with pytest.raises(ValueError, match="at least one client id"):
        verify(sign(apple_claims()), keys, audiences=[])


# -- the attack catalogue: each asserts which check fired --------------------------------------


def test_alg_none_is_refused(keys: AppleKeys) -> None:
    token = _b64({"alg": "none", "kid": KID}) + "." + _b64(apple_claims()) + "."
    assert reason_of(token, keys)[0] == "alg"


def test_hs256_signed_with_the_public_key_is_refused(
    apple_key: rsa.RSAPrivateKey, keys: AppleKeys
) -> None:
    # The classic key-confusion attack: HMAC keyed with the RSA public key's PEM.
    secret = apple_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = _b64({"alg": "HS256", "kid": KID}) + "." + _b64(apple_claims())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert reason_of(signing_input + "." + b64url_encode(mac), keys)[0] == "alg"


def test_es256_is_refused(sign: Callable[..., str], keys: AppleKeys) -> None:
    token = sign(apple_claims(), key=ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    assert reason_of(token, keys)[0] == "alg"


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256"])
def test_other_rsa_algorithms_are_refused(
    sign: Callable[..., str], keys: AppleKeys, alg: str
) -> None:
    assert reason_of(sign(apple_claims(), algorithm=alg), keys)[0] == "alg"


def test_rs256_by_another_key_with_the_same_kid(
    sign: Callable[..., str], keys: AppleKeys, other_key: rsa.RSAPrivateKey
) -> None:
    assert reason_of(sign(apple_claims(), key=other_key), keys)[0] == "signature"


def test_wrong_issuer(sign: Callable[..., str], keys: AppleKeys) -> None:
    for iss in ("https://account.apple.com", "https://appleid.apple.com/", None):
        assert reason_of(sign(apple_claims(iss=iss)), keys) == ("iss", "iss")


def test_wrong_audience(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason_of(sign(apple_claims(aud="com.attacker.app")), keys) == ("aud", "aud")
    assert reason_of(sign(apple_claims(aud=[AUDIENCE, "x"])), keys) == ("aud", "aud")
    # Case matters: Apple client ids are case-sensitive.
    assert reason_of(sign(apple_claims(aud="COM.EXAMPLE.WEB")), keys) == ("aud", "aud")


def test_expired(sign: Callable[..., str], keys: AppleKeys) -> None:
    token = sign(apple_claims(exp=NOW - 61))
    assert reason_of(token, keys) == ("exp", "exp")
    # Within the leeway it is still accepted.
    assert verify(sign(apple_claims(exp=NOW - 59)), keys).sub


def test_iat_in_the_future_beyond_leeway(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason_of(sign(apple_claims(iat=NOW + 61)), keys) == ("iat", "iat")
    assert verify(sign(apple_claims(iat=NOW + 59)), keys).sub
    assert reason_of(sign(apple_claims(iat=NOW + 11)), keys, leeway=10) == ("iat", "iat")


@pytest.mark.parametrize("missing", ["exp", "iat", "sub"])
def test_required_claims(sign: Callable[..., str], keys: AppleKeys, missing: str) -> None:
    assert reason_of(sign(apple_claims(**{missing: None})), keys) == (missing, missing)


def test_non_numeric_exp(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason_of(sign(apple_claims(exp="9999999999")), keys) == ("exp", "exp")
    assert reason_of(sign(apple_claims(exp=True)), keys) == ("exp", "exp")


def test_missing_nonce_when_one_was_sent(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason_of(sign(apple_claims()), keys, nonce="abc") == ("nonce", "nonce")


def test_missing_nonce_accepted_only_when_nonce_supported_is_false(
    sign: Callable[..., str], keys: AppleKeys
) -> None:
    assert verify(sign(apple_claims(nonce_supported=False)), keys, nonce="abc").sub
    assert verify(sign(apple_claims(nonce_supported="false")), keys, nonce="abc").sub
    assert reason_of(sign(apple_claims(nonce_supported=None)), keys, nonce="abc")[0] == "nonce"


def test_mismatched_nonce(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason_of(sign(apple_claims(nonce="other")), keys, nonce="abc") == ("nonce", "nonce")


def test_hashed_nonce_of_native_flows(sign: Callable[..., str], keys: AppleKeys) -> None:
    raw = "raw-nonce-from-the-app"
    hashed = hashlib.sha256(raw.encode()).hexdigest()
    assert verify(sign(apple_claims(nonce=hashed)), keys, nonce=raw).nonce == hashed
    # The hash is accepted for the raw nonce, not the other way round.
    assert reason_of(sign(apple_claims(nonce=raw)), keys, nonce=hashed)[0] == "nonce"


def test_unknown_kid(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason_of(sign(apple_claims(), kid="nope"), keys) == ("kid", "kid")


def test_missing_kid(sign: Callable[..., str], keys: AppleKeys) -> None:
    assert reason_of(sign(apple_claims(), kid=None), keys) == ("kid", "kid")


def test_crit_header_is_refused(sign: Callable[..., str], keys: AppleKeys) -> None:
    token = sign(apple_claims(), headers={"crit": ["exp"]})
    assert reason_of(token, keys)[0] == "header"


def test_oversized_parts(sign: Callable[..., str], keys: AppleKeys) -> None:
    token = sign(apple_claims(padding="x" * 9000))
    assert reason_of(token, keys)[0] == "size"
    header, payload, signature = sign(apple_claims()).split(".")
    assert reason_of(f"{header}.{payload}.{signature * 4}", keys)[0] == "size"
    big_header = _b64({"alg": "RS256", "kid": KID, "x": "y" * 1000})
    assert reason_of(f"{big_header}.{payload}.{signature}", keys)[0] == "size"
    assert reason_of("a" * 20_000, keys)[0] == "size"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        _b64(b"not json") + ".e30.AAAA",
        _b64(b"[1,2]") + ".e30.AAAA",
    ],
)
def test_malformed_tokens(keys: AppleKeys, token: str) -> None:
    assert reason_of(token, keys)[0] == "malformed"


def test_padded_or_standard_base64_signature_is_malformed(
    sign: Callable[..., str], keys: AppleKeys
) -> None:
    header, payload, signature = sign(apple_claims()).split(".")
    assert reason_of(f"{header}.{payload}.{signature}==", keys)[0] == "malformed"
    std = signature.replace("-", "+").replace("_", "/")
    if std != signature:
        assert reason_of(f"{header}.{payload}.{std}", keys)[0] == "malformed"


def test_signed_payload_that_is_not_json(apple_key: rsa.RSAPrivateKey, keys: AppleKeys) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = _b64({"alg": "RS256", "kid": KID}) + "." + _b64(b"\xff\xfe")
    sig = apple_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert reason_of(signing_input + "." + b64url_encode(sig), keys)[0] == "malformed"


def test_non_string_token(keys: AppleKeys) -> None:
    assert reason_of(b"abc", keys)[0] == "malformed"  # type: ignore[arg-type]


# -- at_hash / c_hash ---------------------------------------------------------------------------


def test_at_hash_checked_when_access_token_given(sign: Callable[..., str], keys: AppleKeys) -> None:
    token = sign(apple_claims(at_hash=oidc_hash("access-1")))
    assert verify(token, keys, access_token="access-1").at_hash == oidc_hash("access-1")
    assert reason_of(token, keys, access_token="access-2") == ("at_hash", "at_hash")


def test_c_hash_checked_when_code_given(sign: Callable[..., str], keys: AppleKeys) -> None:
    token = sign(apple_claims(c_hash=oidc_hash("code-1")))
    assert verify(token, keys, code="code-1").c_hash == oidc_hash("code-1")
    assert reason_of(token, keys, code="code-2") == ("c_hash", "c_hash")


def test_oidc_hash_matches_the_spec_example_and_authlib() -> None:
    from authlib.oidc.core.util import create_half_hash

    # OpenID Connect Core, appendix A.4: the code and its c_hash.
    code = "Qcb0Orv1zh30vL1MPRsbm-diHiMwcLyZvn1arpZv-Jxf_11jnpEX3Tgfvk"
    assert oidc_hash(code) == "LDktKdoQak3Pk0cnXxCltA"
    for value in ("a", "access-token-1", "x" * 300):
        assert oidc_hash(value) == create_half_hash(value, "RS256").decode()


# -- differential: PyJWT and joserfc agree ---------------------------------------------------------


def _pyjwt_verdict(token: str, jwk: dict[str, Any]) -> bool:
    key = jwt.PyJWK(jwk).key
    try:
        jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=list(AUDS),
            issuer="https://appleid.apple.com",
            leeway=60,
            options={"require": ["exp", "iat", "sub"], "verify_iat": False},
        )
    except jwt.PyJWTError:
        return False
    return True


def _joserfc_verdict(token: str, jwk: dict[str, Any]) -> bool:
    try:
        decoded = jose_jwt.decode(token, KeySet.import_key_set({"keys": [jwk]}), ["RS256"])
        registry = jose_jwt.JWTClaimsRegistry(
            now=None,
            leeway=60,
            iss={"essential": True, "value": "https://appleid.apple.com"},
            aud={"essential": True, "values": list(AUDS)},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        )
        registry.validate(decoded.claims)
    except Exception:
        return False
    return True


def _ours(token: str, keys: AppleKeys, now: float) -> bool:
    try:
        verify_identity_token(token, keys, audiences=AUDS, now=now)
    except InvalidIdentityToken:
        return False
    return True


def test_differential_agreement_on_variants(
    sign: Callable[..., str], keys: AppleKeys, apple_key: rsa.RSAPrivateKey, other_key: Any
) -> None:
    import time as _time

    now = int(_time.time())  # PyJWT and joserfc read the real clock
    jwk = jwk_for(apple_key, KID)
    variants = {
        "valid": sign(apple_claims(now)),
        "other key": sign(apple_claims(now), key=other_key),
        "expired": sign(apple_claims(now, exp=now - 3600)),
        "wrong aud": sign(apple_claims(now, aud="x")),
        "wrong iss": sign(apple_claims(now, iss="https://evil")),
        "no sub": sign(apple_claims(now, sub=None)),
        "RS512": sign(apple_claims(now), algorithm="RS512"),
        "app id": sign(apple_claims(now, aud=APP_ID)),
    }
    for name, token in variants.items():
        ours = _ours(token, keys, now)
        assert ours == _pyjwt_verdict(token, jwk), name
        assert ours == _joserfc_verdict(token, jwk), name
    assert _ours(variants["valid"], keys, now)
    assert not _ours(variants["expired"], keys, now)


# -- property-based: any mutation of a valid token is rejected -----------------------------------


@pytest.fixture(scope="module")
def fixed_token(apple_key: rsa.RSAPrivateKey) -> str:
    return jwt.encode(apple_claims(), apple_key, algorithm="RS256", headers={"kid": KID})


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_mutation_is_rejected(
    fixed_token: str, jwks: dict[str, Any], data: st.DataObject
) -> None:
    keys = AppleKeys.from_jwks(jwks)
    position = data.draw(st.integers(0, len(fixed_token) - 1))
    replacement = data.draw(
        st.characters(codec="ascii").filter(lambda c: c != fixed_token[position])
    )
    mutated = fixed_token[:position] + replacement + fixed_token[position + 1 :]
    with pytest.raises(InvalidIdentityToken) as info:
        verify_identity_token(mutated, keys, audiences=AUDS, now=NOW)
    assert info.value.reason in {"signature", "malformed", "alg", "kid", "size", "header"}


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(1, 400))
def test_truncation_is_rejected(fixed_token: str, jwks: dict[str, Any], cut: int) -> None:
    keys = AppleKeys.from_jwks(jwks)
    with pytest.raises(InvalidIdentityToken):
        verify_identity_token(fixed_token[:-cut], keys, audiences=AUDS, now=NOW)


async def test_async_verification(sign: Callable[..., str], keys: AppleKeys) -> None:
    token = sign(apple_claims(nonce="n"))
    result = await averify_identity_token(token, keys, audiences=AUDS, nonce="n", now=NOW)
    assert result.nonce == "n"
    with pytest.raises(InvalidIdentityToken) as info:
        await averify_identity_token(token, keys, audiences=["x"], now=NOW)
    assert info.value.reason == "aud"


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_non_ascii_anywhere_is_malformed(
    sign: Callable[..., str], keys: AppleKeys, segment: int
) -> None:
    # The payload case used to escape as a UnicodeEncodeError (while hashing the signing input).
    parts = sign(apple_claims()).split(".")
    parts[segment] = parts[segment][:-4] + "é" + parts[segment][-3:]
    assert reason_of(".".join(parts), keys) == ("malformed", None)


def test_size_is_named_before_the_alphabet(sign: Callable[..., str], keys: AppleKeys) -> None:
    header, payload, signature = sign(apple_claims()).split(".")
    big = "é" * 9000
    with pytest.raises(InvalidIdentityToken, match="payload is too large"):
        verify(f"{header}.{big}.{signature}", keys)
    with pytest.raises(InvalidIdentityToken, match="header is too large"):
        verify(f"{'e' * 2000}.{payload}.{signature}", keys)
    with pytest.raises(InvalidIdentityToken, match="not ASCII"):
        verify(f"{header}.{payload}é.{signature}", keys)
