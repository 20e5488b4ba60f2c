"""The rows a sign-in writes after its user (server/signin_rows.py): every shape, on SQLite
(one statement each) and PostgreSQL (one statement with data-modifying CTEs)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from server_helpers import seed_user
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from appleconnect.server import store
from appleconnect.server.db import migrate, session_factory
from appleconnect.server.security import Encryptor
from appleconnect.server.signin_rows import SignInRows, write_sign_in_rows
from appleconnect.server.writes import Writes


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)  # noqa: S608


async def test_every_shape_writes_its_rows(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as db:
        user = await seed_user(db, "001234.rows", "rows@example.com")
        await db.commit()
    encryptor = Encryptor([Fernet.generate_key()])
    writes = Writes(engine)
    shapes = list(itertools.product((False, True), repeat=3))
    try:
        for i, (token, session, mail) in enumerate(shapes):
            rows = SignInRows(audit=store.audit_values(event="user.signed_in", actor="apple"))
            if token:
                rows.token = store.refresh_token_values(
                    encryptor=encryptor, user_id=user.id, client_id="c", refresh_token=f"r{i}"
                )
            if session:
                _raw, rows.session = store.session_values(user_id=user.id, ttl=60)
            if mail:
                rows.mail = {
                    **dict.fromkeys(("to_address", "subject", "body"), f"m{i}"),
                    "created_at": rows.audit["at"],
                    "status": "outbox",
                    "attempts": 0,
                }
            await writes.run(lambda conn, rows=rows: write_sign_in_rows(conn, rows))
    finally:
        writes.close()
    assert await _count(engine, "audit_log") == 8
    assert await _count(engine, "sessions") == 4
    assert await _count(engine, "email_outbox") == 4
    assert await _count(engine, "apple_tokens") == 1  # one per (user, client): replaced
    async with engine.connect() as conn:
        stored = await conn.scalar(text("SELECT refresh_token_encrypted FROM apple_tokens"))
    assert encryptor.decrypt(stored) == "r7"  # the last shape's token


async def test_two_first_sign_ins_at_once_make_one_user(pg_url: str) -> None:
    """The second finds no user to update, waits on the first's INSERT (the unique ``sub``),
    inserts nothing, and updates the user the first created: one user, created once."""
    engine = create_async_engine(pg_url)
    await migrate(engine)
    identity = store.Identity(
        sub="001234.race",
        email="race@example.com",
        email_verified=True,
        is_private_email=False,
        transfer_sub=None,
        claims={},
    )

    def upsert(conn: Any) -> tuple[Any, bool]:
        return store.upsert_user(
            conn=conn,
            identity=identity,
            client_id="com.example.web",
            default_role="subscriber",
            first_name=None,
            last_name=None,
        )

    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            user1, created1 = await first.run_sync(upsert)

            async def other() -> tuple[Any, bool]:
                async with second.begin():
                    return await second.run_sync(upsert)

            racing = asyncio.create_task(other())
            await asyncio.sleep(0.3)  # the second is now waiting on the first's new row
            assert not racing.done()
            await first.commit()
            user2, created2 = await asyncio.wait_for(racing, 10)
    finally:
        await engine.dispose()
    assert (created1, created2) == (True, False)
    assert user1.id == user2.id
