"""User migration between teams (``/auth/usermigrationinfo``, TN3159)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import jwt
from emulator_helpers import (
    WEB_REDIRECT,
    SecretFactory,
    request_migration_token,
    verify_apple_jwt,
)

from appleconnect.emulator import EmulatorState

Authorize = Callable[..., Any]
Exchange = Callable[..., Any]


async def migration_token(client: httpx.AsyncClient, client_id: str, secret: str) -> str:
    response = await request_migration_token(client, client_id, secret)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def test_transfer_between_teams(
    client: httpx.AsyncClient,
    state: EmulatorState,
    authorize: Authorize,
    make_secret: SecretFactory,
) -> None:
    created = await client.post(
        "/emulator/teams",
        json={
            "team_id": "TEAMB00001",
            "app_id": "com.b.app",
            "services_id": "com.b.web",
            "redirect_uris": [WEB_REDIRECT],
        },
    )
    assert created.status_code == 201
    team_b = created.json()
    first = await authorize(share_email=False)
    old_sub = jwt.decode(first["params"]["id_token"], options={"verify_signature": False})["sub"]

    secret_a = make_secret()
    token_a = await migration_token(client, "com.example.web", secret_a)
    step_a = await client.post(
        "/auth/usermigrationinfo",
        data={
            "sub": old_sub,
            "target": "TEAMB00001",
            "client_id": "com.example.web",
            "client_secret": secret_a,
        },
        headers={"authorization": f"Bearer {token_a}"},
    )
    assert step_a.status_code == 200, step_a.text
    transfer_sub = step_a.json()["transfer_sub"]
    assert set(step_a.json()) == {"transfer_sub"}
    # The app moves to team B; the recipient's calls work from then on (TN3159).
    moved = await client.post(
        "/emulator/transfers", json={"app_id": "com.example.app", "to_team": "TEAMB00001"}
    )
    assert moved.status_code == 201, moved.text

    secret_b = make_secret(
        "com.b.web", team_id="TEAMB00001", key_id=team_b["key_id"], pem=team_b["private_key_pem"]
    )
    token_b = await migration_token(client, "com.b.web", secret_b)
    step_b = await client.post(
        "/auth/usermigrationinfo",
        data={"transfer_sub": transfer_sub, "client_id": "com.b.web", "client_secret": secret_b},
        headers={"authorization": f"Bearer {token_b}"},
    )
    assert step_b.status_code == 200, step_b.text
    body = step_b.json()
    account = state.find_account("maria.ruiz@example.com")
    assert account is not None
    assert body == {
        "sub": state.sub_for(account.id, "TEAMB00001"),
        "email": state.relay_email_for(account.id, "TEAMB00001"),
        "is_private_email": True,
    }
    assert body["sub"] != old_sub

    # Signing in to team B during the 60-day window: the id_token carries transfer_sub, and
    # the consent moved with the app (no first-time user JSON).
    signed_in = await authorize(client_id="com.b.web")
    assert "user" not in signed_in["params"]
    claims = await verify_apple_jwt(client, signed_in["params"]["id_token"], "com.b.web")
    assert claims["transfer_sub"] == transfer_sub
    assert claims["sub"] == body["sub"]
    await client.post("/emulator/clock/advance", json={"seconds": 61 * 86400})
    later = await authorize(client_id="com.b.web")
    later_claims = jwt.decode(later["params"]["id_token"], options={"verify_signature": False})
    assert "transfer_sub" not in later_claims


async def test_migration_errors(
    client: httpx.AsyncClient, authorize: Authorize, make_secret: SecretFactory
) -> None:
    secret = make_secret()
    no_bearer = await client.post(
        "/auth/usermigrationinfo",
        data={"sub": "x", "target": "Y", "client_id": "com.example.web", "client_secret": secret},
    )
    assert no_bearer.json() == {
        "error": "invalid_request",
        "error_description": "The Authorization bearer token is missing.",
    }
    token = await migration_token(client, "com.example.web", secret)
    unknown_sub = await client.post(
        "/auth/usermigrationinfo",
        data={
            "sub": "000000.00000000000000000000000000000000.0000",
            "target": "NOPE",
            "client_id": "com.example.web",
            "client_secret": secret,
        },
        headers={"authorization": f"Bearer {token}"},
    )
    assert unknown_sub.json() == {
        "error": "invalid_request",
        "error_description": "The sub is not a user of this team.",
    }
    bad_secret = await client.post(
        "/auth/usermigrationinfo",
        data={"transfer_sub": "x", "client_id": "com.example.web", "client_secret": "nope"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert bad_secret.json()["error"] == "invalid_client"
