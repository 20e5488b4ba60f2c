"""Rows to read and the comparison of a direct read with SQLAlchemy's (the hot reads' tests)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from server_helpers import seed_user
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from appleconnect.server import store
from appleconnect.server.db import session_factory
from appleconnect.server.reads import Reads

T0 = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)


async def by_sqlalchemy(engine: AsyncEngine, statement: Executable, params: dict[str, Any]) -> Any:
    async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        row = (await conn.execute(statement, params)).first()
    return None if row is None else row._asdict()


def assert_same(fast: dict[str, Any] | None, slow: dict[str, Any] | None) -> None:
    assert fast == slow
    if fast is not None and slow is not None:
        assert list(fast) == list(slow)
        for key, value in fast.items():
            assert type(value) is type(slow[key]), key
            if isinstance(value, dt.datetime):
                assert value.tzinfo is dt.UTC, key


async def seed(engine: AsyncEngine) -> tuple[str, str, str]:
    """A session and two API keys (one used, one revoked), with datetimes set and unset."""
    async with session_factory(engine)() as db:
        user = await seed_user(db, "001234.fast", "fast@example.com", first_name="Zoë")
        session = await store.create_session(db=db, user_id=user.id, ttl=3600, now=T0)
        used = await store.create_api_key(db=db, name="used", now=T0)
        revoked = await store.create_api_key(db=db, name="revoked", now=T0)
        await db.commit()
    async with session_factory(engine)() as db:
        await store.revoke_api_key(db=db, key_id=2, now=T0 + dt.timedelta(seconds=1))
        await db.commit()
    reads = Reads(engine)
    try:
        await store.check_api_key(reads=reads, sessions=session_factory(engine), raw=used, now=T0)
    finally:
        await reads.dispose()
    return session, used, revoked
