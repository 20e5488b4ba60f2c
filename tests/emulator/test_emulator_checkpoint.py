"""Checkpoints: an in-memory emulator put back exactly as it was, keys included, without making
new ones (what the pytest plugin does between tests)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from emulator_helpers import WEB_REDIRECT, SecretFactory
from fastapi import FastAPI

from appleconnect.emulator import (
    EmulatorState,
    StateError,
    checkpoint,
    create_emulator_app,
    restore_checkpoint,
)


async def test_restore_undoes_every_kind_of_change(
    app: FastAPI, state: EmulatorState, client: httpx.AsyncClient, make_secret: SecretFactory
) -> None:
    saved = checkpoint(state)
    accounts_before = [state.account_json(a) for a in state.list_accounts()]
    jwks_before = state.jwks()
    team = state.default_team

    maria = state.find_account("maria.ruiz@example.com")
    assert maria is not None
    code = state.issue_code(
        client_id=team.services_id,
        account_id=maria.id,
        redirect_uri=WEB_REDIRECT,
        nonce=None,
        scopes=["email"],
        first=True,
    ).code
    state.create_account(email="new.person@example.com", first_name="New")
    state.rotate_signing_key(grace_seconds=0)
    state.set_notification_url("http://127.0.0.1:9/apple", team_id=team.team_id)
    state.set_boolean_claims("boolean")
    fault = {"endpoint": "keys", "kind": "status", "status": 503}
    await client.post("/emulator/faults", json=fault)
    await client.post("/emulator/clock/advance", json={"seconds": 30})
    await client.post("/emulator/accounts/li.wei@example.com/revoke-consent", json={"wait": True})

    restore_checkpoint(state, saved, notifier=app.state.notifier, faults=app.state.faults)

    assert [state.account_json(a) for a in state.list_accounts()] == accounts_before
    assert state.jwks() == jwks_before
    assert state.settings.clock_offset == 0
    assert state.settings.boolean_claims == "string"
    assert state.get_team(team.team_id).notification_url is None
    assert app.state.faults.list() == []
    assert app.state.notifier.log() == []
    exchanged = await client.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": WEB_REDIRECT,
            "client_id": team.services_id,
            "client_secret": make_secret(),
        },
    )
    assert exchanged.status_code == 400
    assert exchanged.json()["error_description"] == "The code has expired or has been revoked."


def test_a_checkpoint_survives_being_restored_and_changed_again(state: EmulatorState) -> None:
    saved = checkpoint(state)
    for round_ in range(2):
        restore_checkpoint(state, saved)
        assert state.find_account(f"round{round_}@example.com") is None
        account = state.find_account("sam.okafor@example.com")
        assert account is not None
        state.remove_account(account.id)
        state.create_account(email=f"round{round_}@example.com")
    restore_checkpoint(state, saved)
    assert state.find_account("sam.okafor@example.com") is not None
    assert state.find_account("round1@example.com") is None


def test_a_state_directory_cannot_be_checkpointed(tmp_path: Path) -> None:
    persistent = create_emulator_app(state_dir=tmp_path / "state")
    try:
        with pytest.raises(StateError, match=r"Only an in-memory emulator \(state_dir=None\)"):
            checkpoint(persistent.state.emulator)
    finally:
        persistent.state.emulator.close()
