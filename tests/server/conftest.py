"""Fixtures for the service: one database per backend (SQLite per test; PostgreSQL per test
session, emptied after each test), and the sandbox (service + in-process emulator)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from server_helpers import Env, open_env
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from appleconnect.server.models import Base
from pg_databases import created_database

PG_ADMIN_URL = os.environ.get(
    "APPLECONNECT_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def _pg_available() -> bool:
    if shutil.which("pg_isready") is None:
        return _pg_connects()
    result = subprocess.run(
        ["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True, check=False
    )
    return result.returncode == 0


def _pg_connects() -> bool:
    async def probe() -> bool:
        engine = create_async_engine(PG_ADMIN_URL)
        try:
            async with engine.connect():
                return True
        except OSError:
            return False
        finally:
            await engine.dispose()

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A uniquely named PostgreSQL database for this test session, dropped at the end."""
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (CI must start it)")
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"appleconnect_test_{os.getpid()}_{secrets.token_hex(4)}"
    with created_database(PG_ADMIN_URL, name) as url:
        yield url


async def _empty_pg(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            exists = await conn.scalar(text("SELECT to_regclass('public.users') IS NOT NULL"))
            if exists:
                await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied after the test (the next one starts clean)."""
    yield pg_database
    asyncio.run(_empty_pg(pg_database))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def env(tmp_path: Path, database_url: str) -> AsyncIterator[Env]:
    async with open_env(tmp_path / "data", {"database_url": database_url}) as environment:
        yield environment


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A listening socket whose accept queue is full: a new connection's SYN goes unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    listener.close()
