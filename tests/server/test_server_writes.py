"""The sign-in's write transaction in one hop (server/writes.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from appleconnect.server.writes import Writes


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS writes_probe"))
        await conn.execute(text("CREATE TABLE writes_probe (n INTEGER PRIMARY KEY)"))
    yield engine
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE writes_probe"))
    await engine.dispose()


async def _rows(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.scalars(text("SELECT n FROM writes_probe ORDER BY n"))).all())


async def test_committed_when_the_function_returns(engine: AsyncEngine) -> None:
    writes = Writes(engine)
    try:

        def insert(conn: Connection) -> int:
            conn.execute(text("INSERT INTO writes_probe (n) VALUES (1), (2)"))
            return int(conn.scalar(text("SELECT count(*) FROM writes_probe")) or 0)

        assert await writes.run(insert) == 2
        assert await _rows(engine) == [1, 2]
    finally:
        writes.close()


async def test_rolled_back_and_raised_when_the_function_raises(engine: AsyncEngine) -> None:
    writes = Writes(engine)
    try:

        def half_then_fail(conn: Connection) -> None:
            conn.execute(text("INSERT INTO writes_probe (n) VALUES (7)"))
            raise LookupError("no such thing")

        with pytest.raises(LookupError, match="no such thing"):
            await writes.run(half_then_fail)
        assert await _rows(engine) == []
    finally:
        writes.close()


async def test_the_event_loop_runs_while_a_transaction_does(engine: AsyncEngine) -> None:
    """The transaction runs off the loop (SQLite: its thread; PostgreSQL: awaits the driver)."""
    writes = Writes(engine)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    def slow(conn: Connection) -> None:
        conn.execute(text("INSERT INTO writes_probe (n) VALUES (3)"))
        if conn.dialect.name == "sqlite":
            threading.Event().wait(0.3)
        else:
            conn.execute(text("SELECT pg_sleep(0.3)"))

    task = asyncio.create_task(ticker())
    try:
        await writes.run(slow)
    finally:
        task.cancel()
        writes.close()
    assert ticks >= 10
    assert await _rows(engine) == [3]


async def test_sqlite_takes_the_write_lock_first(tmp_path: Path) -> None:
    """``BEGIN IMMEDIATE``: from its start the transaction holds SQLite's write lock, even
    before it writes, so another writer waits (here: is refused at once) and the transaction
    can never fail to upgrade a read lock."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'lock.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE writes_probe (n INTEGER PRIMARY KEY)"))
    writes = Writes(engine)
    inside, release = threading.Event(), threading.Event()

    def read_then_wait(conn: Connection) -> None:
        conn.execute(text("SELECT count(*) FROM writes_probe"))
        inside.set()
        release.wait(10)
        conn.execute(text("INSERT INTO writes_probe (n) VALUES (5)"))

    running = asyncio.create_task(writes.run(read_then_wait))
    try:
        assert await asyncio.to_thread(inside.wait, 10)
        other = sqlite3.connect(engine.url.database or "", timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
    finally:
        release.set()
        await running
        writes.close()
    assert await _rows(engine) == [5]
    await engine.dispose()
