"""Service commands on the service's data: a data directory (or database) without it is refused
in one line and nothing is created; ``admin login-link`` gives a link the running server takes;
API keys made and revoked with the CLI are in the audit log, as the panel's are."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner
from served_helpers import free_port, start_cli, stop, wait_until_up
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from appleconnect.server import load_settings, store
from appleconnect.server.commands import COMMANDS
from appleconnect.server.db import create_engine, session_factory
from pg_databases import created_database

READING = [
    ["apikey", "list"],
    ["apikey", "create", "--name", "ios"],
    ["apikey", "revoke", "1"],
    ["users", "list"],
    ["users", "show", "a@example.com"],
    ["users", "delete", "1", "--yes"],
    ["users", "migrate", "import"],
    ["admin", "login-link"],
]


@pytest.fixture(autouse=True)
def no_appleconnect_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("APPLECONNECT_")]:
        monkeypatch.delenv(name)


def cli() -> click.Group:
    group = click.Group("appleconnect")
    for command in COMMANDS:
        group.add_command(command)
    return group


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli(), list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_missing_data_directory_is_refused_and_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # "run from another folder"
    code, output = invoke(*command)
    assert (code, output) == (
        1,
        "appleconnect: no service data in appleconnect-data (no such directory); pass "
        "--data-dir or run `appleconnect serve` first\n",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_data_directory_without_a_database_is_refused(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "elsewhere"
    data.mkdir()
    code, output = invoke(*command, "--data-dir", str(data))
    assert (code, output) == (
        1,
        f"appleconnect: no service data in {data} (no database there); pass --data-dir or run "
        "`appleconnect serve` first\n",
    )
    assert list(data.iterdir()) == []


def test_migrate_still_creates_the_database(tmp_path: Path) -> None:
    data = tmp_path / "new"
    code, output = invoke("migrate", "--data-dir", str(data))
    assert code == 0, output
    assert (data / "appleconnect.db").is_file()
    assert invoke("apikey", "list", "--data-dir", str(data)) == (0, "")


def test_a_database_file_of_database_url_that_is_not_there(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'mode = "sandbox"\ndatabase_url = "sqlite+aiosqlite:///{tmp_path}/x.db"\n')
    code, output = invoke("users", "list", "--config", str(config))
    assert code == 1
    assert output == (
        f"appleconnect: no service data in {tmp_path}/x.db (no such database file); check "
        "database_url, or run `appleconnect migrate` or `appleconnect serve` first\n"
    )
    assert not (tmp_path / "x.db").exists()


@pytest.fixture
def empty_pg_database(pg_database: str) -> Iterator[str]:
    """A new PostgreSQL database without any table (beside the session's one)."""
    name = f"appleconnect_empty_{secrets.token_hex(4)}"
    with created_database(pg_database.rsplit("/", 1)[0] + "/postgres", name) as url:
        yield url


def test_a_database_without_the_services_tables_is_refused(
    tmp_path: Path, empty_pg_database: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'mode = "sandbox"\ndatabase_url = "{empty_pg_database}"\n')
    code, output = invoke("apikey", "list", "--config", str(config))
    assert code == 1
    assert output.startswith(f"appleconnect: no service data in {empty_pg_database} (no tables")

    async def tables() -> int:
        engine = create_async_engine(empty_pg_database)
        try:
            async with engine.connect() as conn:
                found = await conn.scalar(
                    text(
                        "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'"
                    )
                )
                return int(found or 0)
        finally:
            await engine.dispose()

    assert asyncio.run(tables()) == 0  # nothing was created


def test_login_link_from_another_folder_is_taken_by_the_running_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, data = free_port(), tmp_path / "project" / "appleconnect-data"
    data.parent.mkdir()
    server = start_cli(
        ["serve", "--port", str(port), "--data-dir", str(data)], tmp_path / "serve.log"
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", server)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        assert invoke("admin", "login-link")[0] == 1  # the old trap: not the server's data
        assert list(elsewhere.iterdir()) == []
        code, output = invoke("admin", "login-link", "--data-dir", str(data))
        assert code == 0, output
        link = output.strip()
        # At the port this server listens on, not the default 8000.
        assert link.startswith(f"http://127.0.0.1:{port}/admin/login?token=acl_")
        token = re.sub(r".*token=", "", link)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            assert http.get(link).status_code == 200
            signed_in = http.post(
                "/admin/login",
                data={"token": token},
                headers={"origin": f"http://127.0.0.1:{port}"},
            )
            assert signed_in.status_code == 303, signed_in.text
            assert signed_in.headers["location"] == "/admin"
    finally:
        stop(server)


def test_api_keys_of_the_cli_are_in_the_audit_log(tmp_path: Path) -> None:
    data = str(tmp_path)
    assert invoke("migrate", "--data-dir", data)[0] == 0
    code, key = invoke("apikey", "create", "--name", "backend", "--data-dir", data)
    assert code == 0
    assert invoke("apikey", "revoke", "1", "--data-dir", data)[0] == 0
    assert invoke("apikey", "revoke", "1", "--data-dir", data)[0] == 1  # not again

    async def audited() -> list[tuple[str, str, dict[str, object]]]:
        engine = create_engine(load_settings(data_dir=tmp_path, environ={}))
        try:
            async with session_factory(engine)() as db:
                events = await store.audit_events(db=db)
                return [(e.event, e.actor, json.loads(e.detail)) for e in events]
        finally:
            await engine.dispose()

    # The same entries as the admin panel's (one code path: store.create/revoke_api_key).
    assert asyncio.run(audited()) == [
        ("admin.apikey_created", "cli", {"name": "backend"}),
        ("admin.apikey_revoked", "cli", {"id": 1}),
    ]
    assert key.strip() not in (tmp_path / "appleconnect.db").read_bytes().decode("latin-1")


def test_a_command_names_the_variable_that_chose_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke("migrate", "--data-dir", str(tmp_path))[0] == 0  # a sandbox's data
    monkeypatch.setenv("APPLECONNECT_TEAM_ID", "ABCDE12345")  # exported for `secret`
    code, output = invoke("apikey", "list", "--data-dir", str(tmp_path))
    assert code == 1
    assert output.startswith("appleconnect: encryption_key: production mode needs a key")
    assert output.endswith(
        "(production mode, chosen by APPLECONNECT_TEAM_ID; without it and without --config, "
        "serve runs the sandbox)\n"
    )
