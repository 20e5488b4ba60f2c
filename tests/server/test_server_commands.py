"""The service's CLI commands, on the same data directory a server would use."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from server_helpers import free_port, seed_user

from appleconnect.cli import main
from appleconnect.server.commands import COMMANDS


def cli() -> click.Group:
    group = click.Group("appleconnect")
    for command in COMMANDS:
        group.add_command(command)
    return group


def run(*args: str) -> str:
    result = CliRunner().invoke(cli(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_commands_are_the_documented_ones() -> None:
    assert sorted(c.name or "" for c in COMMANDS) == ["admin", "apikey", "migrate", "users"]


def test_migrate_apikeys_and_login_link(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert "database at revision 0005" in run("migrate", "--data-dir", data)
    key = run("apikey", "create", "--name", "mobile", "--data-dir", data).strip()
    assert key.startswith("ack_")
    listed = run("apikey", "list", "--data-dir", data)
    assert "mobile" in listed
    assert key not in listed
    assert key[:12] in listed
    assert "active" in listed
    run("apikey", "revoke", "1", "--data-dir", data)
    assert "revoked" in run("apikey", "list", "--data-dir", data)
    failed = CliRunner().invoke(cli(), ["apikey", "revoke", "1", "--data-dir", data])
    assert failed.exit_code == 1
    assert "no active API key has id 1" in failed.output
    link = run("admin", "login-link", "--data-dir", data).strip()
    assert link.startswith("http://127.0.0.1:8000/admin/login?token=acl_")


def test_apikey_name_is_validated(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli(), ["apikey", "create", "--name", " ", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--name" in result.output


def test_users_commands(tmp_path: Path) -> None:
    import asyncio

    from appleconnect.server import load_settings
    from appleconnect.server.db import create_engine, migrate, session_factory

    settings = load_settings(data_dir=tmp_path, environ={})

    async def seed() -> None:
        engine = create_engine(settings)
        await migrate(engine)
        async with session_factory(engine)() as db:
            await seed_user(db, "001234.abc.0001", "a@example.com", "Ann")
            await db.commit()
        await engine.dispose()

    asyncio.run(seed())
    data = str(tmp_path)
    assert "001234.abc.0001\ta@example.com\tsubscriber" in run("users", "list", "--data-dir", data)
    shown = json.loads(run("users", "show", "a@example.com", "--data-dir", data))
    assert shown["first_name"] == "Ann"
    assert shown["sub"] == "001234.abc.0001"
    # The same shape as GET /api/get_currentuserinfo, plus the team-transfer identifier.
    assert shown["name"] == "Ann"
    assert shown["email_verified"] is True
    assert "transfer_sub" in shown
    assert shown["transfer_sub"] is None
    missing = CliRunner().invoke(cli(), ["users", "show", "nobody", "--data-dir", data])
    assert missing.exit_code == 1
    # One line in the form every command uses, not click's "Error: ...".
    assert missing.output == "appleconnect: no user matches 'nobody'\n"
    out = run("users", "delete", "1", "--yes", "--data-dir", data)
    assert "NOT revoked at Apple" in out
    assert run("users", "list", "--data-dir", data) == ""


def test_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text('mode = "production"\nsession_ttl = -1\n')
    result = CliRunner().invoke(
        cli(), ["migrate", "--data-dir", str(tmp_path), "--config", str(config)]
    )
    assert result.exit_code == 1
    assert "session_ttl: must be a positive number." in result.output
    assert result.output.startswith("appleconnect: ")
    assert result.output.count("\n") == 1
    # serve says it the same way (its message names the configuration), on a free port (a
    # port in use is refused first).
    port = str(free_port())
    code = main(["serve", "--data-dir", str(tmp_path), "--config", str(config), "--port", port])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("appleconnect: configuration error: ")
    assert "session_ttl: must be a positive number." in err
