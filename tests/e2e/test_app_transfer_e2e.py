"""An app transfer between teams, the whole documented sequence (Apple's TN3159), end to end:
the emulator on a loopback port (the project's pytest plugin), two services (team A, then team
B, the same client ids as in docs/client.md), the real ``appleconnect`` commands and the
library's helpers.

Export before the transfer (``users migrate export``), the transfer itself
(``appleconnect emulator-transfer``), then import after it (``users migrate import``); the
library's ``transfer_sub_for`` / ``sub_for_transfer`` agree with what the commands stored, and
each team is refused where Apple refuses it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from appleconnect import AppleClient, ClientSecret, InvalidClient, InvalidRequest
from appleconnect.cli import main
from appleconnect.emulator import EmulatorState
from appleconnect.server import create_app, load_settings, store

PUBLIC = "http://127.0.0.1:8000"
TEAM_B = "TEAMB12345"
APP = "com.example.app"
WEB = "com.example.web"
ACCOUNTS = ("maria.ruiz@example.com", "li.wei@example.com")


@pytest.fixture
def apple(apple_emulator: Any) -> tuple[str, EmulatorState]:
    """The emulator on a loopback port (the project's pytest plugin); its URL and its state."""
    state: EmulatorState = apple_emulator.state
    return apple_emulator.base_url, state


def write_config(path: Path, base_url: str, team_id: str, key_id: str, pem: str) -> Path:
    """A service configuration for one team: its Team ID and key, the app's client ids."""
    key_file = path.with_suffix(".p8")
    key_file.write_text(pem)
    path.write_text(
        'mode = "sandbox"\n'
        f'public_url = "{PUBLIC}"\n'
        f'apple_base_url = "{base_url}"\n'
        f'team_id = "{team_id}"\n'
        f'key_id = "{key_id}"\n'
        f'private_key_file = "{key_file}"\n'
        f'client_id = "{WEB}"\n'
        f'app_ids = ["{APP}"]\n'
    )
    return path


async def sign_in(data_dir: Path, config: Path, base_url: str, account: str) -> dict[str, Any]:
    """One native sign-in through the team's service (``/api/apple_connect``)."""
    app = create_app(load_settings(data_dir=data_dir, config=config, environ={}))
    async with app.router.lifespan_context(app):
        async with app.state.container.sessions() as db:
            key = await store.create_api_key(db=db, name="tests")
            await db.commit()
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url=PUBLIC) as service,
            httpx.AsyncClient(base_url=base_url) as emulator,
        ):
            authorized = await emulator.post(
                "/emulator/authorize",
                json={
                    "client_id": APP,
                    "response_type": "code id_token",
                    "scope": "name email",
                    "state": "s" * 20,
                    "account": account,
                    "share_email": account != ACCOUNTS[0],
                },
            )
            assert authorized.status_code == 200, authorized.text
            params = authorized.json()["params"]
            connect = await service.post(
                "/api/apple_connect",
                data={"key": key, "code": params["code"], "id_token": params["id_token"]},
            )
            assert connect.status_code == 200, connect.text
            result: dict[str, Any] = connect.json()
            return result


def rows(data_dir: Path) -> dict[int, tuple[str, str | None]]:
    """``user id → (sub, transfer_sub)`` from the service's database."""
    with closing(sqlite3.connect(data_dir / "appleconnect.db")) as db:
        found = db.execute("SELECT id, sub, transfer_sub FROM users").fetchall()
    return {uid: (sub, transfer_sub) for uid, sub, transfer_sub in found}


def test_export_transfer_import_with_the_commands_and_the_library(
    tmp_path: Path,
    apple: tuple[str, EmulatorState],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("APPLECONNECT_")]:
        monkeypatch.delenv(name)
    base_url, state = apple
    team_a = state.default_team
    team_b = state.create_team(team_id=TEAM_B)
    config_a = write_config(
        tmp_path / "team-a.toml", base_url, team_a.team_id, team_a.key_id, team_a.private_key_pem
    )
    config_b = write_config(
        tmp_path / "team-b.toml", base_url, TEAM_B, team_b["key_id"], team_b["private_key_pem"]
    )
    lib_a = AppleClient(
        APP,
        ClientSecret(team_a.team_id, team_a.key_id, APP, team_a.private_key_pem),
        base_url=base_url,
    )
    lib_b = AppleClient(
        APP,
        ClientSecret(TEAM_B, team_b["key_id"], APP, team_b["private_key_pem"]),
        base_url=base_url,
    )
    data_dir = tmp_path / "data"
    for account in ACCOUNTS:
        asyncio.run(sign_in(data_dir, config_a, base_url, account))
    accounts = {email: state.find_account(email).id for email in ACCOUNTS}  # type: ignore[union-attr]
    before = rows(data_dir)
    ids = {  # email -> the service's user id, found by the user's sub in team A
        email: next(uid for uid, (sub, _) in before.items() if sub == sub_a)
        for email, sub_a in ((e, state.sub_for(a, team_a.team_id)) for e, a in accounts.items())
    }
    capsys.readouterr()

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    # 1. Before the transfer: team A exports; team B cannot use the app's client id yet.
    code, out, err = run(
        "users", "migrate", "export", "--target-team-id", TEAM_B,
        "--config", str(config_a), "--data-dir", str(data_dir),
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "export: 2 users migrated, 0 unchanged, 0 failed"
    exported = rows(data_dir)
    for email, account in accounts.items():
        transfer_sub = exported[ids[email]][1]
        assert transfer_sub == state.transfer_sub_for(account, TEAM_B)
        assert lib_a.transfer_sub_for(before[ids[email]][0], TEAM_B) == transfer_sub
    with pytest.raises(InvalidClient):
        lib_b.migration_access_token()

    # 2. The transfer, through the command line.
    code, out, err = run(
        "emulator-transfer", "--url", base_url, "--app-id", APP, "--to-team", TEAM_B
    )
    assert (code, err) == (0, "")
    moved = json.loads(out)
    assert (moved["client_ids"], moved["from_team"], moved["to_team"], moved["done"]) == (
        [APP, WEB],
        team_a.team_id,
        TEAM_B,
        True,
    )

    # 3. After it: team A is refused; team B's library helper and import command work.
    fresh_a = AppleClient(  # no cached migration token: team A asks Apple again
        APP, ClientSecret(team_a.team_id, team_a.key_id, APP, team_a.private_key_pem),
        base_url=base_url,
    )  # fmt: skip
    with fresh_a, pytest.raises(InvalidClient):
        fresh_a.migration_access_token()
    maria_sub_b = state.sub_for(accounts[ACCOUNTS[0]], TEAM_B)
    info = lib_b.sub_for_transfer(exported[ids[ACCOUNTS[0]]][1])  # type: ignore[arg-type]
    assert (info.sub, info.is_private_email) == (maria_sub_b, True)
    assert info.email == state.relay_email_for(accounts[ACCOUNTS[0]], TEAM_B)
    code, out, err = run(
        "users", "migrate", "import", "--config", str(config_b), "--data-dir", str(data_dir)
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "import: 2 users migrated, 0 unchanged, 0 failed"
    imported = rows(data_dir)
    assert set(imported) == set(before)  # the same accounts, re-keyed
    for email, account in accounts.items():
        assert imported[ids[email]][0] == state.sub_for(account, TEAM_B) != before[ids[email]][0]

    # 4. Signing in to team B's service with the app's client id: team B's sub, the transfer_sub
    # claim during the window, and the same account.
    maria = asyncio.run(sign_in(data_dir, config_b, base_url, ACCOUNTS[0]))
    assert maria["id_token"]["sub"] == maria_sub_b
    assert maria["id_token"]["transfer_sub"] == exported[ids[ACCOUNTS[0]]][1]
    assert rows(data_dir) == imported  # signed in to the re-keyed account, no new one

    # 5. A recipient call for a transfer_sub Apple does not know is Apple's invalid_request.
    with pytest.raises(InvalidRequest):
        lib_b.sub_for_transfer("000000.00000000000000000000000000000000.0000")
    lib_a.close()
    lib_b.close()


def test_emulator_transfer_command_reports_a_refusal(
    apple: tuple[str, EmulatorState], capsys: pytest.CaptureFixture[str]
) -> None:
    base_url, state = apple
    code = main(["emulator-transfer", "--url", base_url, "--app-id", APP, "--to-team", "NOPE"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == "appleconnect: the emulator refused the transfer: Unknown team 'NOPE'.\n"
    assert state.get_client(APP).team_id == state.default_team.team_id  # type: ignore[union-attr]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    code = main(["emulator-transfer", "--url", nowhere, "--app-id", APP, "--to-team", TEAM_B])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.startswith(f"appleconnect: cannot reach the emulator at {nowhere}: ")
