"""The hot reads on SQLite (``Reads`` on ``sqlite3`` directly, :mod:`appleconnect.server
.sqlite_reads`) against SQLAlchemy's own execution of the same statements on the same rows."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from read_helpers import T0, assert_same, by_sqlalchemy, seed
from sqlalchemy import bindparam, event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from appleconnect.server import store
from appleconnect.server.db import migrate
from appleconnect.server.health import is_database_unavailable
from appleconnect.server.models import User
from appleconnect.server.reads import Reads
from appleconnect.server.security import hash_token


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
    await migrate(engine)
    yield engine
    await engine.dispose()


async def test_rows_are_those_of_sqlalchemy(engine: AsyncEngine) -> None:
    reads = Reads(engine)
    assert reads._sqlite is not None
    session, used, revoked = await seed(engine)
    for statement, raw in [
        (store._SESSION_USER, session),
        (store._SESSION_USER, "acs_unknown"),
        (store._API_KEY_BY_HASH, used),
        (store._API_KEY_BY_HASH, revoked),
        (store._API_KEY_BY_HASH, "ack_unknown"),
    ]:
        assert reads._sqlite.compiled.takes(statement)
        params = {"digest": hash_token(raw)}
        fast = await reads.first(statement, params)
        assert_same(
            None if fast is None else dict(fast), await by_sqlalchemy(engine, statement, params)
        )
    user = await store.session_user(reads=reads, raw=session, now=T0)
    assert user is not None
    assert (user.sub, user.first_name, user.created_at.tzinfo) == ("001234.fast", "Zoë", dt.UTC)
    await reads.dispose()


async def test_watched_engines_and_other_statements_take_sqlalchemys_path(
    engine: AsyncEngine,
) -> None:
    reads = Reads(engine)
    session, _used, _revoked = await seed(engine)
    params = {"digest": hash_token(session)}
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    reader = reads.engines[-1]
    event.listen(reader, "before_cursor_execute", record)
    try:
        assert await reads.first(store._SESSION_USER, params) is not None
    finally:
        event.remove(reader, "before_cursor_execute", record)
    assert len(seen) == 1  # the listener saw the read
    in_list = select(User.sub).where(User.id.in_(bindparam("ids", expanding=True)))
    assert reads._sqlite is not None
    assert not reads._sqlite.compiled.takes(in_list)
    assert await reads.first(in_list, {"ids": [1, 2]}) == {"sub": "001234.fast"}
    await reads.dispose()


async def test_an_error_is_sqlalchemys_and_judged_as_everywhere(engine: AsyncEngine) -> None:
    reads = Reads(engine)
    await seed(engine)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE sessions"))
    with pytest.raises(OperationalError, match="no such table: sessions") as caught:
        await reads.first(store._SESSION_USER, {"digest": "x"})
    assert not is_database_unavailable(caught.value)  # a bug, not an outage: answered 500
    await reads.dispose()


async def test_the_connection_cannot_write(engine: AsyncEngine) -> None:
    reads = Reads(engine)
    await seed(engine)
    assert reads._sqlite is not None
    connection = reads._sqlite._connect()
    with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
        connection.execute("DELETE FROM users")
    await reads.dispose()
