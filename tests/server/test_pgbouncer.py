"""The service behind PgBouncer in transaction pooling (Debian's ``pgbouncer``), on PostgreSQL.

There, consecutive transactions of one client connection run on whichever server connection is
free, so asyncpg's cached, numbered prepared statements go missing or collide. With
``database_pgbouncer`` the engine prepares nothing it reuses (docs/service.md#pgbouncer); these
tests show that it works, and that without it the known failure happens.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import Env, free_port, open_env
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from appleconnect.server import load_settings
from appleconnect.server.db import create_engine, migrate

pytestmark = pytest.mark.slow

PGBOUNCER = "/usr/sbin/pgbouncer"
SIGNINS = 12


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (PGBOUNCER if os.access(PGBOUNCER, os.X_OK) else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed (CI installs Debian's package)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    return found


def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out.stdout)
    assert match, out.stdout
    return tuple(int(part) for part in match.groups())


def _config(workdir: Path, port: int, binary: str) -> Path:
    lines = [
        "[databases]",
        "* = host=127.0.0.1 port=5432",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "auth_type = trust",
        f"auth_file = {workdir / 'users.txt'}",
        "pool_mode = transaction",
        # Few server connections for many clients: statements meet other clients' connections.
        "default_pool_size = 2",
        "unix_socket_dir =",
        "logfile =",
        "pidfile =",
    ]
    if _version(binary) >= (1, 21):
        # Newer PgBouncers can track protocol-level prepared statements; off, as in older ones.
        lines.append("max_prepared_statements = 0")
    (workdir / "users.txt").write_text('"postgres" ""\n')
    ini = workdir / "pgbouncer.ini"
    ini.write_text("\n".join(lines) + "\n")
    for path in (workdir / "users.txt", ini):
        path.chmod(0o644)
    return ini


def _run_as() -> list[str]:
    """PgBouncer refuses to run as root: then it switches to an unprivileged user."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["-u", user]
    pytest.fail("running as root with neither a postgres nor a nobody user for pgbouncer")


@pytest.fixture
def bouncer(pg_url: str, tmp_path: Path) -> Iterator[str]:
    """PgBouncer on a free loopback port in front of the test database (migrated directly);
    yields the database's URL through it."""
    binary = _pgbouncer_binary()
    asyncio.run(_migrate_directly(pg_url))
    workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    workdir.chmod(0o755)  # readable by the user it switches to
    port = free_port()
    ini = _config(workdir, port, binary)
    log = (tmp_path / "pgbouncer.log").open("wb")
    proc = subprocess.Popen([binary, *_run_as(), str(ini)], stdout=log, stderr=log)
    try:
        _wait_listening(port, proc, tmp_path / "pgbouncer.log")
        name = pg_url.rsplit("/", 1)[1]
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{name}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def _migrate_directly(url: str) -> None:
    engine = create_engine(load_settings(environ={}, overrides={"database_url": url}))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited: {log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("pgbouncer did not listen")


async def _queries_through(url: str, pgbouncer: bool) -> list[BaseException | None]:
    """Eight connections of one engine, each running ten small transactions at once."""
    settings = load_settings(
        environ={}, overrides={"database_url": url, "database_pgbouncer": pgbouncer}
    )
    engine = create_engine(settings)

    async def one(n: int) -> BaseException | None:
        try:
            for i in range(10):
                async with engine.begin() as conn:
                    value = await conn.scalar(text("SELECT CAST(:v AS integer) + 1"), {"v": n + i})
                    assert value == n + i + 1
                    await conn.scalar(text("SELECT count(*) FROM users"))
        except DBAPIError as exc:
            return exc
        return None

    try:
        return await asyncio.gather(*(one(n) for n in range(8)))
    finally:
        await engine.dispose()


def _prepared_statement_failure(exc: BaseException | None) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    driver = type(getattr(exc, "driver_exception", None) or exc.orig).__name__
    return driver in ("InvalidSQLStatementNameError", "DuplicatePreparedStatementError") or bool(
        re.search(r"prepared statement \S+ (does not|already) exist", str(exc))
    )


async def _next_transaction_elsewhere(url: str, pgbouncer: bool) -> BaseException | None:
    """A client's statement prepared in one transaction, and its next transaction made to run
    on another server connection (another client's open transaction holds the first one)."""
    settings = load_settings(
        environ={}, overrides={"database_url": url, "database_pgbouncer": pgbouncer}
    )
    engine = create_engine(settings)

    async def add_one(conn: Any) -> None:
        async with conn.begin():
            assert await conn.scalar(text("SELECT CAST(:v AS integer) + 1"), {"v": 1}) == 2

    try:
        async with engine.connect() as first, engine.connect() as other:
            await add_one(first)  # prepared on server connection X, which is then free
            async with other.begin():
                await other.scalar(text("SELECT 1"))  # holds X until it commits
                try:
                    await add_one(first)  # PgBouncer gives this transaction a new connection
                except DBAPIError as exc:
                    return exc
        return None
    finally:
        await engine.dispose()


def test_without_the_setting_prepared_statements_break_behind_pgbouncer(bouncer: str) -> None:
    failure = asyncio.run(_next_transaction_elsewhere(bouncer, pgbouncer=False))
    assert failure is not None, "asyncpg's prepared statement survived transaction pooling"
    assert _prepared_statement_failure(failure), failure


def test_with_the_setting_a_statement_follows_its_transaction(bouncer: str) -> None:
    assert asyncio.run(_next_transaction_elsewhere(bouncer, pgbouncer=True)) is None


def test_with_the_setting_every_transaction_succeeds(bouncer: str) -> None:
    outcomes = asyncio.run(_queries_through(bouncer, pgbouncer=True))
    assert outcomes == [None] * 8


async def _sign_in(env: Env, account: str) -> str:
    native = await env.native_code(account=account)
    answer = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "code": native["code"]}
    )
    assert answer.status_code == 200, answer.text
    cookie: str = answer.json()["cookie"]
    return cookie


async def _check(env: Env, cookie: str) -> dict[str, Any]:
    valid = await env.http.get(
        "/api/validate_auth_cookie", headers={"Authorization": f"Bearer {cookie}"}
    )
    assert valid.status_code == 200, valid.text
    info = await env.http.get("/api/get_currentuserinfo", params={"cookie": cookie})
    assert info.status_code == 200, info.text
    user: dict[str, Any] = info.json()["user"]
    assert valid.json()["user_id"] == user["id"]
    return user


async def test_concurrent_signins_and_session_checks_through_pgbouncer(
    bouncer: str, tmp_path: Path
) -> None:
    overrides = {"database_url": bouncer, "database_pgbouncer": True}
    async with open_env(tmp_path / "data", overrides) as env:
        accounts = [f"user{n}@example.com" for n in range(SIGNINS)]
        for account in accounts:
            env.emulator.create_account(email=account)
        cookies = await asyncio.gather(*(_sign_in(env, account) for account in accounts))
        users = await asyncio.gather(*(_check(env, cookie) for cookie in cookies))
        again = await asyncio.gather(*(_sign_in(env, account) for account in accounts))
        assert len(set(cookies) | set(again)) == 2 * SIGNINS
    assert sorted(user["email"] for user in users) == sorted(accounts)
    assert len({user["id"] for user in users}) == SIGNINS


def test_the_setting_needs_postgresql(tmp_path: Path) -> None:
    from appleconnect.server.settings import SettingsError

    settings = load_settings(data_dir=tmp_path, environ={"APPLECONNECT_DATABASE_PGBOUNCER": "true"})
    assert settings.database_pgbouncer is True
    with pytest.raises(SettingsError, match=r"^database_pgbouncer: applies to a PostgreSQL"):
        settings.validate(apple=False)
    assert not any(tmp_path.iterdir())
