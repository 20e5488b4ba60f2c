"""An app moving between teams as Apple runs it (TN3159): the transfer of an App ID with its
Services IDs at a given time, who is refused before and after, the subs and the ``transfer_sub``
claim that sign-ins give, and the 60-day window counted from the transfer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from emulator_helpers import BASE, SecretFactory, request_migration_token

from appleconnect.emulator import (
    EmulatorState,
    checkpoint,
    create_emulator_app,
    restore_checkpoint,
)

Authorize = Callable[..., Any]
Exchange = Callable[..., Any]
TEAM_B = "TEAMB00001"
DAY = 86400
WEB = "com.example.web"
NOT_YOURS = "The client_id does not belong to the team of the client secret."


async def migration_info(
    client: httpx.AsyncClient, client_id: str, secret: str, **form: str
) -> httpx.Response:
    token = await request_migration_token(client, client_id, secret)
    if token.status_code != 200:
        return token
    return await client.post(
        "/auth/usermigrationinfo",
        data={"client_id": client_id, "client_secret": secret, **form},
        headers={"authorization": f"Bearer {token.json()['access_token']}"},
    )


def claims_of(result: dict[str, Any]) -> dict[str, Any]:
    # The emulator's clock runs days ahead here: read the claims (signatures are checked in
    # the other tests).
    claims: dict[str, Any] = jwt.decode(
        result["params"]["id_token"], options={"verify_signature": False}
    )
    return claims


def sub_of(result: dict[str, Any]) -> str:
    return str(claims_of(result)["sub"])


@pytest.fixture
async def team_b(client: httpx.AsyncClient) -> dict[str, str]:
    created = await client.post("/emulator/teams", json={"team_id": TEAM_B})
    assert created.status_code == 201
    result: dict[str, str] = created.json()
    return result


async def test_app_transfer_end_to_end(
    client: httpx.AsyncClient,
    state: EmulatorState,
    authorize: Authorize,
    exchange: Exchange,
    make_secret: SecretFactory,
    team_b: dict[str, str],
) -> None:
    team_a = state.default_team
    maria = state.find_account("maria.ruiz@example.com")
    li = state.find_account("li.wei@example.com")
    assert maria is not None
    assert li is not None
    maria_a = sub_of(await authorize(share_email=False))
    assert maria_a == state.sub_for(maria.id, team_a.team_id)
    await authorize(account="li.wei@example.com")

    def secret_b(client_id: str) -> str:
        return make_secret(
            client_id, team_id=TEAM_B, key_id=team_b["key_id"], pem=team_b["private_key_pem"]
        )

    # Before the transfer: team A exports Maria (not Li); team B is refused for A's client ids
    # and its recipient call fails.
    exported = await migration_info(client, WEB, make_secret(), sub=maria_a, target=TEAM_B)
    transfer_sub = exported.json()["transfer_sub"]
    code = (await authorize())["params"]["code"]
    refused_b = await exchange(code=code, client_secret=secret_b(WEB))
    assert refused_b.json() == {"error": "invalid_client", "error_description": NOT_YOURS}
    early = await migration_info(
        client, team_b["app_id"], secret_b(team_b["app_id"]), transfer_sub=transfer_sub
    )
    assert early.json() == {
        "error": "invalid_request",
        "error_description": "No app has been transferred to this team yet.",
    }

    # The transfer is scheduled 50 days later (the export happened well before it).
    await client.post("/emulator/clock/advance", json={"seconds": 50 * DAY})
    at = state.now() + 3600
    scheduled = await client.post(
        "/emulator/transfers", json={"app_id": team_a.app_id, "to_team": TEAM_B, "at": at}
    )
    assert scheduled.status_code == 201
    assert scheduled.json() == {
        "app_id": "com.example.app",
        "client_ids": ["com.example.app", WEB],
        "from_team": team_a.team_id,
        "to_team": TEAM_B,
        "at": at,
        "done": False,
    }
    assert (await client.get("/emulator/transfers")).json()[0]["done"] is False
    still_a = sub_of(await authorize())
    assert still_a == maria_a
    await client.post("/emulator/clock/advance", json={"seconds": 3600})
    assert (await client.get("/emulator/transfers")).json()[0]["done"] is True
    assert state.get_client(WEB).team_id == TEAM_B  # type: ignore[union-attr]

    # After it: team A is refused for the moved client ids, team B is accepted.
    code = (await authorize())["params"]["code"]
    refused_a = await exchange(code=code)
    assert refused_a.json() == {"error": "invalid_client", "error_description": NOT_YOURS}
    tokens = await exchange(code=code, client_secret=secret_b(WEB))
    assert tokens.status_code == 200, tokens.text

    # Sign-ins give team B's subs; transfer_sub only for the user team A exported; the
    # consent moved with the app (no first-time user JSON).
    maria_b = await authorize()
    claims = claims_of(maria_b)
    assert claims["sub"] == state.sub_for(maria.id, TEAM_B) != maria_a
    assert claims["transfer_sub"] == transfer_sub
    assert claims["email"] == state.relay_email_for(maria.id, TEAM_B)
    assert "user" not in maria_b["params"]
    li_b = await authorize(account="li.wei@example.com")
    li_claims = claims_of(li_b)
    assert li_claims["sub"] == state.sub_for(li.id, TEAM_B)
    assert "transfer_sub" not in li_claims

    # The recipient call, with the moved client id, within 60 days of the transfer.
    await client.post("/emulator/clock/advance", json={"seconds": 59 * DAY})
    imported = await migration_info(client, WEB, secret_b(WEB), transfer_sub=transfer_sub)
    assert imported.json() == {
        "sub": state.sub_for(maria.id, TEAM_B),
        "email": state.relay_email_for(maria.id, TEAM_B),
        "is_private_email": True,
    }
    assert "transfer_sub" in claims_of(await authorize())
    await client.post("/emulator/clock/advance", json={"seconds": 1 * DAY})
    late = await migration_info(client, WEB, secret_b(WEB), transfer_sub=transfer_sub)
    assert late.json() == {
        "error": "invalid_request",
        "error_description": "The migration period has ended.",
    }
    late_claims = claims_of(await authorize())
    assert late_claims["sub"] == state.sub_for(maria.id, TEAM_B)
    assert "transfer_sub" not in late_claims


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"app_id": "com.nope", "to_team": TEAM_B}, "'com.nope' is not a registered App ID."),
        ({"app_id": WEB, "to_team": TEAM_B}, "'com.example.web' is not a registered App ID."),
        ({"app_id": "com.example.app", "to_team": "NOTEAM"}, "Unknown team 'NOTEAM'."),
        (
            {"app_id": "com.example.app", "to_team": TEAM_B, "services_ids": ["com.b.web"]},
            "'com.b.web' is not a Services ID of team {team_a}.",
        ),
        ({"app_id": "com.example.app", "to_team": TEAM_B, "at": "soon"}, "at must be a time"),
    ],
)
async def test_transfer_refusals_change_nothing(
    client: httpx.AsyncClient,
    state: EmulatorState,
    team_b: dict[str, str],
    body: dict[str, Any],
    detail: str,
) -> None:
    await client.post(
        "/emulator/clients", json={"client_id": "com.b.web", "team_id": TEAM_B, "kind": "web"}
    )
    refused = await client.post("/emulator/transfers", json=body)
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith(detail.format(team_a=state.default_team.team_id))
    assert (await client.get("/emulator/transfers")).json() == []
    assert state.get_client("com.example.app").team_id == state.default_team.team_id  # type: ignore[union-attr]


async def test_one_transfer_at_a_time_and_not_to_the_owner(
    client: httpx.AsyncClient, state: EmulatorState, team_b: dict[str, str]
) -> None:
    team_a = state.default_team.team_id
    later = {"app_id": "com.example.app", "to_team": TEAM_B, "at": state.now() + 600}
    assert (await client.post("/emulator/transfers", json=later)).status_code == 201
    again = await client.post("/emulator/transfers", json=later)
    assert again.json() == {"detail": "A transfer of com.example.app is already scheduled."}
    await client.post("/emulator/clock/advance", json={"seconds": 600})
    same = await client.post(
        "/emulator/transfers", json={"app_id": "com.example.app", "to_team": TEAM_B}
    )
    assert same.json() == {"detail": f"com.example.app already belongs to team {TEAM_B}."}
    back = await client.post(
        "/emulator/transfers", json={"app_id": "com.example.app", "to_team": team_a}
    )
    assert back.status_code == 201
    assert state.get_client(WEB).team_id == team_a  # type: ignore[union-attr]


async def test_a_scheduled_transfer_survives_a_restart(tmp_path: Path) -> None:
    app = create_emulator_app(state_dir=tmp_path, base_url=BASE)
    state: EmulatorState = app.state.emulator
    state.create_team(team_id=TEAM_B)
    state.transfer_app(app_id="com.example.app", to_team=TEAM_B, at=state.now() + 3600)
    state.close()
    again = create_emulator_app(state_dir=tmp_path, base_url=BASE)
    reopened: EmulatorState = again.state.emulator
    assert reopened.get_client(WEB).team_id == reopened.default_team.team_id  # type: ignore[union-attr]
    reopened.set_clock_offset(3600)
    assert reopened.get_client(WEB).team_id == TEAM_B  # type: ignore[union-attr]
    reopened.close()
    third = create_emulator_app(state_dir=tmp_path, base_url=BASE)
    assert third.state.emulator.get_client(WEB).team_id == TEAM_B
    assert [t.done for t in third.state.emulator.list_app_transfers()] == [True]
    third.state.emulator.close()


def test_a_restored_checkpoint_keeps_its_scheduled_transfer(state: EmulatorState) -> None:
    team_a = state.default_team.team_id
    state.create_team(team_id=TEAM_B)
    state.transfer_app(app_id="com.example.app", to_team=TEAM_B, at=state.now() + 600)
    saved = checkpoint(state)
    state.set_clock_offset(600)
    assert state.get_client(WEB).team_id == TEAM_B  # type: ignore[union-attr]
    restore_checkpoint(state, saved)
    assert state.get_client(WEB).team_id == team_a  # type: ignore[union-attr]
    state.set_clock_offset(600)
    assert state.get_client(WEB).team_id == TEAM_B  # type: ignore[union-attr]
