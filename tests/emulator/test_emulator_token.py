"""``POST /auth/token``: client-secret validation, single-use codes, grants, Apple's errors."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from emulator_helpers import WEB_REDIRECT, SecretFactory, verify_apple_jwt

from appleconnect.emulator import EmulatorState

Authorize = Callable[..., Any]
Exchange = Callable[..., Any]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_signed_secret(state: EmulatorState, client_id: str = "com.example.web") -> str:
    """A client secret whose ES256 signature is ASN.1 DER, as PHP's openssl_sign produces."""
    team = state.default_team
    now = int(state.now())
    header = b64url(json.dumps({"alg": "ES256", "kid": team.key_id}).encode())
    payload = b64url(
        json.dumps(
            {
                "iss": team.team_id,
                "iat": now,
                "exp": now + 3600,
                "aud": "https://appleid.apple.com",
                "sub": client_id,
            }
        ).encode()
    )
    key = serialization.load_pem_private_key(team.private_key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    return f"{header}.{payload}.{b64url(signature)}"


def half_hash(value: str) -> str:
    return b64url(hashlib.sha256(value.encode()).digest()[:16])


async def test_code_exchange_with_pyjwt_secret(
    client: httpx.AsyncClient, authorize: Authorize, exchange: Exchange, state: EmulatorState
) -> None:
    result = await authorize()
    code = result["params"]["code"]
    response = await exchange(code=code)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "id_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    claims = await verify_apple_jwt(client, body["id_token"], "com.example.web")
    account = state.find_account("maria.ruiz@example.com")
    assert account is not None
    assert claims["sub"] == state.sub_for(account.id, state.default_team.team_id)
    assert claims["at_hash"] == half_hash(body["access_token"])
    assert claims["nonce"] == "n-1"
    assert claims["nonce_supported"] is True
    assert claims["email"] == "maria.ruiz@example.com"
    assert claims["email_verified"] == "true"
    assert claims["is_private_email"] == "false"
    assert "real_user_status" not in claims  # web client ids never get it
    assert isinstance(claims["auth_time"], int)
    assert jwt.get_unverified_header(body["id_token"]) == {
        "kid": state.signer().kid,
        "alg": "RS256",
    }


async def test_sub_has_apples_format(authorize: Authorize, exchange: Exchange) -> None:
    body = (await exchange(code=(await authorize())["params"]["code"])).json()
    sub = jwt.decode(body["id_token"], options={"verify_signature": False})["sub"]
    assert re.fullmatch(r"[0-9]{6}\.[0-9a-f]{32}\.[0-9]{4}", sub), sub


async def test_code_used_twice_is_invalid_grant(authorize: Authorize, exchange: Exchange) -> None:
    code = (await authorize())["params"]["code"]
    assert (await exchange(code=code)).status_code == 200
    second = await exchange(code=code)
    assert second.status_code == 400
    assert second.json() == {
        "error": "invalid_grant",
        "error_description": "The code has already been used.",
    }


async def test_code_expires_after_five_minutes(
    client: httpx.AsyncClient, authorize: Authorize, exchange: Exchange
) -> None:
    code = (await authorize())["params"]["code"]
    await client.post("/emulator/clock/advance", json={"seconds": 301})
    response = await exchange(code=code)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "The code has expired or has been revoked.",
    }


async def test_unknown_code_is_invalid_grant(exchange: Exchange) -> None:
    response = await exchange(code="c0000.0.abcd.nope")
    assert response.json()["error"] == "invalid_grant"
    assert response.json()["error_description"] == "The code has expired or has been revoked."


async def test_der_signature_is_invalid_client(
    authorize: Authorize, exchange: Exchange, state: EmulatorState
) -> None:
    code = (await authorize())["params"]["code"]
    response = await exchange(code=code, client_secret=der_signed_secret(state))
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_client"
    assert "not the 64-byte raw R||S" in body["error_description"]
    # The code was not spent by a request that failed client authentication.
    assert (await exchange(code=code)).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"sub": "com.example.WEB"}, "sub is not identical to client_id"),
        ({"iss": "ABCDEFGHIJ"}, "iss is not the Team ID"),
        ({"aud": "https://account.apple.com"}, "aud must be https://appleid.apple.com"),
        ({"exp": "later"}, "exp is missing or not an integer"),
        ({"exp": None}, "exp is missing or not an integer"),
        ({"iat": None}, "iat is missing or not an integer"),
    ],
)
async def test_bad_secret_claims_are_invalid_client(
    authorize: Authorize,
    exchange: Exchange,
    make_secret: SecretFactory,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    code = (await authorize())["params"]["code"]
    response = await exchange(code=code, client_secret=make_secret(**overrides))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"
    assert reason in response.json()["error_description"]


async def test_secret_time_rules(
    authorize: Authorize, exchange: Exchange, make_secret: SecretFactory, state: EmulatorState
) -> None:
    code = (await authorize())["params"]["code"]
    now = int(state.now())
    cases = {
        "The client secret has expired.": {"iat": now - 7200, "exp": now - 1},
        "more than 15777000 seconds": {"exp": now + 15_777_000 + 60},
        "iat is in the future": {"iat": now + 600},
    }
    for reason, claims in cases.items():
        response = await exchange(code=code, client_secret=make_secret(**claims))
        assert response.json()["error"] == "invalid_client"
        assert reason in response.json()["error_description"]
    # Exactly six months ahead and a few seconds of skew are fine.
    fine = make_secret(iat=now + 30, exp=now + 15_777_000 - 5)
    assert (await exchange(code=code, client_secret=fine)).status_code == 200


async def test_secret_signed_with_another_key_is_invalid_client(
    authorize: Authorize, exchange: Exchange, make_secret: SecretFactory
) -> None:
    code = (await authorize())["params"]["code"]
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    response = await exchange(code=code, client_secret=make_secret(pem=other.decode()))
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "The client secret signature does not verify.",
    }
    unknown = await exchange(code=code, client_secret=make_secret(key_id="NOPE000000"))
    assert unknown.json()["error_description"] == (
        "The client secret kid is not a registered Key ID."
    )


async def test_hs256_secret_is_invalid_client(authorize: Authorize, exchange: Exchange) -> None:
    code = (await authorize())["params"]["code"]
    forged = jwt.encode({"sub": "com.example.web"}, "k" * 32, algorithm="HS256")
    response = await exchange(code=code, client_secret=forged)
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "The client secret must be signed with ES256.",
    }


async def test_client_id_mismatch_is_invalid_grant(
    client: httpx.AsyncClient,
    authorize: Authorize,
    exchange: Exchange,
    make_secret: SecretFactory,
) -> None:
    await client.post(
        "/emulator/clients",
        json={"client_id": "com.example.other", "redirect_uris": [WEB_REDIRECT]},
    )
    code = (await authorize())["params"]["code"]
    response = await exchange(code=code, client_id="com.example.other")
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "client_id mismatch. The code was not issued to com.example.other.",
    }


async def test_redirect_uri_must_match_the_code(authorize: Authorize, exchange: Exchange) -> None:
    code = (await authorize())["params"]["code"]
    response = await exchange(code=code, redirect_uri="https://example.com/other")
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Invalid redirect_uri.",
    }
    missing = await exchange(code=code, redirect_uri=None)
    assert missing.json()["error"] == "invalid_client"


async def test_request_shape_errors(client: httpx.AsyncClient, exchange: Exchange) -> None:
    as_json = await client.post("/auth/token", json={"grant_type": "authorization_code"})
    assert as_json.status_code == 400
    assert as_json.json() == {
        "error": "invalid_request",
        "error_description": "Invalid content type.",
    }
    assert (await exchange(grant_type="password")).json()["error"] == "unsupported_grant_type"
    assert (await exchange(grant_type=None)).json()["error"] == "unsupported_grant_type"
    missing_code = await exchange(code=None)
    assert missing_code.json() == {
        "error": "invalid_request",
        "error_description": "The parameter code is missing.",
    }
    unknown = await exchange(client_id="com.example.unknown", code="x")
    assert unknown.json()["error"] == "invalid_client"
    repeated = await client.post(
        "/auth/token",
        content=b"grant_type=authorization_code&code=a&code=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert repeated.json() == {
        "error": "invalid_request",
        "error_description": "The parameter code is repeated.",
    }
    huge = await client.post(
        "/auth/token",
        content=b"code=" + b"a" * 20_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert huge.json() == {
        "error": "invalid_request",
        "error_description": "The request body is too large.",
    }


async def test_refresh_grant_has_no_new_refresh_token(
    client: httpx.AsyncClient, authorize: Authorize, exchange: Exchange
) -> None:
    tokens = (await exchange(code=(await authorize())["params"]["code"])).json()
    response = await exchange(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "id_token"}
    claims = await verify_apple_jwt(client, body["id_token"], "com.example.web")
    assert claims["at_hash"] == half_hash(body["access_token"])
    assert "nonce" not in claims
    bad = await exchange(grant_type="refresh_token", refresh_token="r-not-a-token")
    assert bad.json() == {
        "error": "invalid_grant",
        "error_description": "The token has expired or has been revoked.",
    }


async def test_client_credentials_for_user_migration(exchange: Exchange) -> None:
    response = await exchange(grant_type="client_credentials", scope="user.migration")
    assert response.status_code == 200
    assert set(response.json()) == {"access_token", "token_type", "expires_in"}
    wrong = await exchange(grant_type="client_credentials", scope="openid")
    assert wrong.json() == {
        "error": "invalid_scope",
        "error_description": "The requested scope is invalid.",
    }


async def test_boolean_claims_can_be_json_booleans(
    client: httpx.AsyncClient, authorize: Authorize, exchange: Exchange
) -> None:
    await client.put("/emulator/settings", json={"boolean_claims": "boolean"})
    tokens = (await exchange(code=(await authorize(share_email=False))["params"]["code"])).json()
    claims = await verify_apple_jwt(client, tokens["id_token"], "com.example.web")
    assert claims["email_verified"] is True
    assert claims["is_private_email"] is True
    assert claims["email"].endswith("@privaterelay.appleid.com")


async def test_native_flow_carries_real_user_status(
    client: httpx.AsyncClient, authorize: Authorize, exchange: Exchange
) -> None:
    result = await authorize(
        client_id="com.example.app",
        redirect_uri=None,
        response_mode=None,
        response_type="code id_token",
        scope="email name",
    )
    assert result["response_mode"] == "native"
    assert result["redirect_uri"] is None
    params = result["params"]
    assert json.loads(params["user"])["name"] == {"firstName": "Maria", "lastName": "Ruiz"}
    claims = await verify_apple_jwt(client, params["id_token"], "com.example.app")
    assert claims["real_user_status"] == 2
    assert claims["c_hash"] == half_hash(params["code"])
    response = await exchange(client_id="com.example.app", code=params["code"], redirect_uri=None)
    assert response.status_code == 200
    again = await authorize(client_id="com.example.app", redirect_uri=None, response_mode=None)
    claims = await verify_apple_jwt(client, again["params"]["id_token"], "com.example.app")
    assert "real_user_status" not in claims  # first sign-in only
    assert "user" not in again["params"]
