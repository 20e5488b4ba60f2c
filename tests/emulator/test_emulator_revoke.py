"""``POST /auth/revoke`` and the first-time ``user`` JSON: sent once, and again after revoke."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from emulator_helpers import SecretFactory

Authorize = Callable[..., Any]
Exchange = Callable[..., Any]


async def revoke(
    client: httpx.AsyncClient, make_secret: SecretFactory, token: str, **extra: str
) -> httpx.Response:
    return await client.post(
        "/auth/revoke",
        data={
            "client_id": "com.example.web",
            "client_secret": make_secret(),
            "token": token,
            **extra,
        },
    )


async def test_user_only_on_first_authorization_and_again_after_revoke(
    client: httpx.AsyncClient,
    authorize: Authorize,
    exchange: Exchange,
    make_secret: SecretFactory,
) -> None:
    first = await authorize()
    assert json.loads(first["params"]["user"]) == {
        "name": {"firstName": "Maria", "lastName": "Ruiz"},
        "email": "maria.ruiz@example.com",
    }
    second = await authorize()
    assert "user" not in second["params"]
    tokens = (await exchange(code=second["params"]["code"])).json()

    response = await revoke(
        client, make_secret, tokens["refresh_token"], token_type_hint="refresh_token"
    )
    assert response.status_code == 200
    assert response.content == b""

    refresh = await exchange(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refresh.json() == {
        "error": "invalid_grant",
        "error_description": "The token has expired or has been revoked.",
    }
    third = await authorize(name={"firstName": "M", "lastName": "R"}, share_email=False)
    user = json.loads(third["params"]["user"])
    assert user["name"] == {"firstName": "M", "lastName": "R"}
    assert user["email"].endswith("@privaterelay.appleid.com")


async def test_revoking_an_access_token_also_ends_the_consent(
    client: httpx.AsyncClient,
    authorize: Authorize,
    exchange: Exchange,
    make_secret: SecretFactory,
) -> None:
    await authorize()
    tokens = (await exchange(code=(await authorize())["params"]["code"])).json()
    assert (await revoke(client, make_secret, tokens["access_token"])).status_code == 200
    again = await authorize()
    assert "user" in again["params"]


async def test_revoke_answers_200_for_junk_and_already_revoked(
    client: httpx.AsyncClient,
    authorize: Authorize,
    exchange: Exchange,
    make_secret: SecretFactory,
) -> None:
    junk = await revoke(client, make_secret, "r-not-a-token")
    assert junk.status_code == 200
    assert junk.content == b""
    tokens = (await exchange(code=(await authorize())["params"]["code"])).json()
    assert (await revoke(client, make_secret, tokens["refresh_token"])).status_code == 200
    assert (await revoke(client, make_secret, tokens["refresh_token"])).status_code == 200


async def test_revoke_errors(
    client: httpx.AsyncClient,
    authorize: Authorize,
    exchange: Exchange,
    make_secret: SecretFactory,
) -> None:
    tokens = (await exchange(code=(await authorize())["params"]["code"])).json()
    mismatch = await revoke(
        client, make_secret, tokens["refresh_token"], token_type_hint="access_token"
    )
    assert mismatch.json() == {
        "error": "invalid_request",
        "error_description": "The token does not match the token_type_hint.",
    }
    bad_secret = await client.post(
        "/auth/revoke",
        data={
            "client_id": "com.example.web",
            "client_secret": make_secret(sub="com.example.app"),
            "token": tokens["refresh_token"],
        },
    )
    assert bad_secret.json()["error"] == "invalid_client"
    missing = await client.post(
        "/auth/revoke",
        data={"client_id": "com.example.web", "client_secret": make_secret()},
    )
    assert missing.json() == {
        "error": "invalid_request",
        "error_description": "The parameter token is missing.",
    }
    # None of the failures revoked anything.
    refresh = await exchange(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refresh.status_code == 200
