"""The hot reads on PostgreSQL (``Reads`` on asyncpg directly, :mod:`appleconnect.server.pg_reads`)
against SQLAlchemy's own execution of the same statements on the same rows: the same values of
the same types, the same errors, and the connection back in the pool whatever happens."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from read_helpers import T0, assert_same, by_sqlalchemy, seed
from sqlalchemy import (
    JSON,
    Column,
    Date,
    Float,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Uuid,
    bindparam,
    cast,
    event,
    func,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from appleconnect.server import pg_leases, pg_reads, store
from appleconnect.server.db import migrate, session_factory
from appleconnect.server.health import is_database_unavailable
from appleconnect.server.models import Base, User
from appleconnect.server.pg_reads import PgReads
from appleconnect.server.read_plans import MAX_STATEMENTS
from appleconnect.server.reads import Reads
from appleconnect.server.security import hash_token


@pytest.fixture(params=[2, 8], ids=["pool-of-2", "keeping-2"])
async def engine(pg_database: str, request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    """A pool of 2 keeps no connection for the reads (every read checks one out and in); a
    pool of 8 lets them keep 2 (:mod:`appleconnect.server.pg_leases`)."""
    engine = create_async_engine(pg_database, pool_size=request.param, max_overflow=0)
    await migrate(engine)
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await engine.dispose()


@pytest.fixture
async def reads(engine: AsyncEngine) -> AsyncIterator[Reads]:
    """The engine's reads, given back before the engine is disposed."""
    reads = Reads(engine)
    try:
        yield reads
    finally:
        await reads.dispose()


async def test_rows_are_those_of_sqlalchemy(engine: AsyncEngine, reads: Reads) -> None:
    assert reads._pg is not None
    session, used, revoked = await seed(engine)
    cases = [
        (store._SESSION_USER, session),
        (store._SESSION_USER, "acs_unknown"),
        (store._API_KEY_BY_HASH, used),
        (store._API_KEY_BY_HASH, revoked),
        (store._API_KEY_BY_HASH, "ack_unknown"),
    ]
    for statement, raw in cases:
        assert reads._pg.takes(statement)
        params = {"digest": hash_token(raw)}
        assert_same(
            await reads.first(statement, params), await by_sqlalchemy(engine, statement, params)
        )
    user = await store.session_user(reads=reads, raw=session, now=T0)
    assert user is not None
    assert (user.sub, user.first_name, user.last_name) == ("001234.fast", "Zoë", None)
    assert user.created_at.tzinfo is dt.UTC
    assert await store.check_api_key(reads=reads, sessions=session_factory(engine), raw=used) == 1
    assert (
        await store.check_api_key(reads=reads, sessions=session_factory(engine), raw=revoked)
        is None
    )
    assert engine.sync_engine.pool.checkedout() == kept(reads)  # type: ignore[attr-defined]
    await reads.dispose()
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_types_with_processors_are_those_of_sqlalchemy(
    engine: AsyncEngine, reads: Reads
) -> None:
    """Bind and result processors of other types (JSON, Numeric, intervals...) as well."""
    statement = select(
        cast(bindparam("n", type_=Numeric(10, 2)), Numeric(10, 2)).label("n"),
        cast(bindparam("f", type_=Float), Float).label("f"),
        cast(bindparam("j", type_=JSON), JSON).label("j"),
        cast(bindparam("d", type_=Date), Date).label("d"),
        cast(bindparam("i", type_=Interval), Interval).label("i"),
        cast(bindparam("u", type_=Uuid), Uuid).label("u"),
        cast(bindparam("b", type_=LargeBinary), LargeBinary).label("b"),
        func.now().label("now"),
    )
    params = {
        "n": decimal.Decimal("12.34"),
        "f": 1.5,
        "j": {"k": [1, "two", None]},
        "d": dt.date(2026, 3, 1),
        "i": dt.timedelta(days=1, seconds=2),
        "u": uuid.UUID(int=7),
        "b": b"\x00\xff",
    }
    assert reads._pg is not None
    assert reads._pg.takes(statement)
    fast, slow = (
        await reads.first(statement, params),
        await by_sqlalchemy(engine, statement, params),
    )
    assert fast is not None
    assert slow is not None
    assert fast.pop("now").tzinfo is not None
    assert slow.pop("now").tzinfo is not None
    assert_same(fast, slow)


async def test_watched_engines_and_other_statements_take_sqlalchemys_path(
    engine: AsyncEngine, reads: Reads
) -> None:
    session, _used, _revoked = await seed(engine)
    expanding = select(User.sub).where(User.sub.in_(bindparam("subs", expanding=True)))
    assert reads._pg is not None
    assert not reads._pg.takes(expanding)
    assert not reads._pg.takes(select(User.sub).where(User.id == 1))  # a value in the statement
    assert await reads.first(expanding, {"subs": ["001234.fast"]}) == {"sub": "001234.fast"}
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await store.session_user(reads=reads, raw=session, now=T0) is not None
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert len(seen) == 1
    assert "FROM sessions JOIN users" in seen[0]
    assert Reads(engine, autocommit=False)._pg is None  # behind PgBouncer: SQLAlchemy's path


def kept(reads: Reads) -> int:
    """How many connections the reads keep out of the pool."""
    return 0 if reads._pg is None else reads._pg.leases.count


BACKEND_PID = select(func.pg_backend_pid().label("pid"))


async def backend_pid(reads: Reads) -> int:
    row = await reads.first(BACKEND_PID, {})
    assert row is not None
    return int(row["pid"])


async def terminate(engine: AsyncEngine, pid: int) -> None:
    async with engine.connect() as admin:
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await admin.commit()


@pytest.mark.parametrize("path", ["asyncpg", "sqlalchemy"])
async def test_a_dropped_connection_fails_as_with_sqlalchemy(
    engine: AsyncEngine, reads: Reads, pg_database: str, path: str
) -> None:
    """The read fails with SQLAlchemy's error, which says the database is unavailable (503),
    the dead connection is dropped, and the next read runs on a new one."""
    assert reads._pg is not None
    if path == "sqlalchemy":
        reads._pg = None
    pid = await backend_pid(reads)
    admin = create_async_engine(pg_database)
    try:
        await terminate(admin, pid)
    finally:
        await admin.dispose()
    pool = engine.sync_engine.pool
    assert pool.checkedin() + kept(reads) == 1  # type: ignore[attr-defined]  # the one just used
    with pytest.raises(DBAPIError) as failed:
        await backend_pid(reads)
    assert failed.value.connection_invalidated
    assert is_database_unavailable(failed.value)
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await backend_pid(reads) != pid


async def test_a_cancelled_read_gives_its_connection_back(
    engine: AsyncEngine, reads: Reads
) -> None:
    """Cancelled on its first run (the statement prepared in a greenlet) and on a later one
    (on a kept connection when the pool lets the reads keep some)."""
    sleep = select(func.pg_sleep(bindparam("s", type_=Float)).isnot(None).label("slept"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reads.first(sleep, {"s": 5.0}), 0.3)
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await reads.first(sleep, {"s": 0.0}) == {"slept": True}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reads.first(sleep, {"s": 5.0}), 0.3)
    assert kept(reads) == 0
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    for _ in range(3):
        assert await reads.first(sleep, {"s": 0.0}) == {"slept": True}


async def test_an_sql_error_is_sqlalchemys_and_keeps_the_connection(
    engine: AsyncEngine, reads: Reads
) -> None:
    missing = Table("missing", MetaData(), Column("x", Integer))
    statement = select(missing.c.x).where(missing.c.x == bindparam("x"))
    pid = await backend_pid(reads)
    with pytest.raises(ProgrammingError) as fast:
        await reads.first(statement, {"x": 1})
    with pytest.raises(ProgrammingError) as slow:
        await by_sqlalchemy(engine, statement, {"x": 1})
    assert type(fast.value.orig) is type(slow.value.orig)
    assert not fast.value.connection_invalidated
    assert engine.sync_engine.pool.checkedout() == kept(reads)  # type: ignore[attr-defined]
    assert pid in {await backend_pid(reads) for _ in range(2)}


async def test_a_failed_connect_raises_sqlalchemys_error(pg_database: str) -> None:
    """A connect that fails (here: no such database) raises what ``engine.connect()`` does
    (a ``DBAPIError`` since SQLAlchemy 2.1, asyncpg's error before)."""
    engine = create_async_engine(pg_database.rsplit("/", 1)[0] + "/no_such_database_here")
    statement = select(func.pg_backend_pid().label("pid"))
    try:
        with pytest.raises(Exception, match="no_such_database_here") as fast:
            await Reads(engine).first(statement, {})
        with pytest.raises(Exception, match="no_such_database_here") as slow:
            await by_sqlalchemy(engine, statement, {})
        assert type(fast.value) is type(slow.value)
        assert type(getattr(fast.value, "orig", None)) is type(getattr(slow.value, "orig", None))
        assert is_database_unavailable(fast.value) == is_database_unavailable(slow.value)
    finally:
        await engine.dispose()


def test_statements_built_per_call_are_not_kept() -> None:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    reads = PgReads(engine)
    made = [select(User.sub).where(User.id == bindparam("id")) for _ in range(MAX_STATEMENTS + 1)]
    assert all(reads.takes(statement) for statement in made[:MAX_STATEMENTS])
    assert not reads.takes(made[-1])
    assert reads.takes(made[0])


@pytest.fixture
async def keeping(pg_database: str) -> AsyncIterator[tuple[AsyncEngine, Reads]]:
    """Reads on a pool of 8, which lets them keep 2 connections."""
    engine = create_async_engine(pg_database, pool_size=8, max_overflow=0)
    reads = Reads(engine)
    try:
        yield engine, reads
    finally:
        await reads.dispose()
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await engine.dispose()


async def test_reads_keep_connections_and_run_without_a_greenlet(
    keeping: tuple[AsyncEngine, Reads], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, reads = keeping
    pool = engine.sync_engine.pool
    pid = await backend_pid(reads)  # checked out in a greenlet, and kept
    spawned: list[Any] = []
    spawn = pg_reads.greenlet_spawn

    def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        spawned.append(fn)
        return spawn(fn, *args, **kwargs)

    monkeypatch.setattr(pg_reads, "greenlet_spawn", counting)
    assert {await backend_pid(reads) for _ in range(5)} == {pid}
    assert spawned == []
    assert (kept(reads), pool.checkedout()) == (1, 1)  # type: ignore[attr-defined]
    # Three at once: one on the kept connection, two checked out, of which one is kept.
    assert len(set(await asyncio.gather(*(backend_pid(reads) for _ in range(3))))) == 3
    assert (kept(reads), pool.checkedout()) == (2, 2)  # type: ignore[attr-defined]
    assert len(spawned) == 2


async def test_an_error_on_a_kept_connection_is_sqlalchemys_and_gives_it_back(
    keeping: tuple[AsyncEngine, Reads],
) -> None:
    engine, reads = keeping
    divide = select((bindparam("n", type_=Integer) / bindparam("d", type_=Integer)).label("q"))
    assert reads._pg is not None
    assert reads._pg.takes(divide)
    assert await reads.first(divide, {"n": 1, "d": 1}) == {"q": 1}
    assert kept(reads) == 1
    with pytest.raises(DBAPIError, match="division by zero") as fast:
        await reads.first(divide, {"n": 1, "d": 0})
    with pytest.raises(DBAPIError) as slow:
        await by_sqlalchemy(engine, divide, {"n": 1, "d": 0})
    assert type(fast.value) is type(slow.value)
    assert type(fast.value.orig) is type(slow.value.orig)
    assert not fast.value.connection_invalidated
    assert kept(reads) == 0
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await reads.first(divide, {"n": 1, "d": 1}) == {"q": 1}


async def test_a_kept_connection_goes_back_when_old_or_when_the_pool_was_invalidated(
    keeping: tuple[AsyncEngine, Reads], pg_database: str
) -> None:
    engine, reads = keeping
    assert reads._pg is not None
    leases = reads._pg.leases
    first = await backend_pid(reads)
    old = leases.idle[0]
    old.until = time.monotonic() - 1  # kept longer than LEASE_SECONDS
    await backend_pid(reads)
    assert leases.idle[0] is not old
    assert leases.count == 1
    # A disconnect seen on SQLAlchemy's path (another connection of the pool, dropped)
    # invalidates every older connection: the kept one goes back, and is replaced.
    async with engine.connect() as other:
        other_pid = (await other.execute(BACKEND_PID)).scalar_one()
        await other.commit()
    admin = create_async_engine(pg_database)
    try:
        await terminate(admin, other_pid)
    finally:
        await admin.dispose()
    with pytest.raises(DBAPIError) as failed:
        await by_sqlalchemy(engine, BACKEND_PID, {})
    assert failed.value.connection_invalidated
    assert await backend_pid(reads) not in {first, other_pid}
    assert leases.count == 1


async def test_closing_the_reads_gives_back_a_connection_in_use_after_its_read(
    keeping: tuple[AsyncEngine, Reads],
) -> None:
    engine, reads = keeping
    sleep = select(func.pg_sleep(bindparam("s", type_=Float)).isnot(None).label("slept"))
    assert await reads.first(sleep, {"s": 0.0}) == {"slept": True}
    reading = asyncio.create_task(reads.first(sleep, {"s": 0.3}))
    await asyncio.sleep(0.1)
    await reads.dispose()
    assert engine.sync_engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    assert await reading == {"slept": True}
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await reads.first(sleep, {"s": 0.0}) == {"slept": True}  # and none is kept anew
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


SLEEP = select(func.pg_sleep(bindparam("s", type_=Float)).isnot(None).label("slept"))


async def keep_two(reads: Reads) -> set[int]:
    """Two reads at once: both check a connection out and keep it; their backends."""
    pids = set(await asyncio.gather(backend_pid(reads), backend_pid(reads)))
    assert kept(reads) == 2
    return pids


async def test_reads_wait_for_a_kept_connection_rather_than_check_one_out(
    keeping: tuple[AsyncEngine, Reads], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, reads = keeping
    pids = await keep_two(reads)
    spawned: list[Any] = []
    spawn = pg_reads.greenlet_spawn
    monkeypatch.setattr(
        pg_reads, "greenlet_spawn", lambda fn, *a: spawned.append(fn) or spawn(fn, *a)
    )
    assert set(await asyncio.gather(*(backend_pid(reads) for _ in range(10)))) <= pids
    assert spawned == []
    assert engine.sync_engine.pool.checkedout() == 2  # type: ignore[attr-defined]


async def test_a_read_waits_at_most_wait_seconds_then_checks_one_out(
    keeping: tuple[AsyncEngine, Reads],
) -> None:
    _engine, reads = keeping
    pids = await keep_two(reads)
    assert await reads.first(SLEEP, {"s": 0.0}) == {"slept": True}  # planned
    busy = [asyncio.create_task(reads.first(SLEEP, {"s": 3.0})) for _ in range(2)]
    await asyncio.sleep(0.2)
    started = time.monotonic()
    assert await backend_pid(reads) not in pids  # on a connection of the pool's
    assert time.monotonic() - started < 2.0
    assert all(not task.done() for task in busy)
    await asyncio.gather(*busy)
    assert kept(reads) == 2


async def test_a_waiting_read_goes_on_when_a_kept_connection_is_lost(
    keeping: tuple[AsyncEngine, Reads], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled read loses its connection: the read waiting for one checks one out at once
    (waiting longer would never end: here it would wait 60 s), and a waiting read that is
    cancelled itself takes nothing with it."""
    monkeypatch.setattr(pg_leases, "WAIT_SECONDS", 60.0)
    engine, reads = keeping
    await keep_two(reads)
    assert await reads.first(SLEEP, {"s": 0.0}) == {"slept": True}
    long = asyncio.create_task(reads.first(SLEEP, {"s": 0.6}))
    doomed = asyncio.create_task(reads.first(SLEEP, {"s": 5.0}))
    await asyncio.sleep(0.1)
    with pytest.raises(TimeoutError):  # a third read waits, and is cancelled while it does
        await asyncio.wait_for(backend_pid(reads), 0.1)
    waiting = asyncio.create_task(backend_pid(reads))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    doomed.cancel()
    assert isinstance(await asyncio.wait_for(waiting, 5.0), int)
    assert await long == {"slept": True}
    assert kept(reads) == 2
    assert engine.sync_engine.pool.checkedout() == 2  # type: ignore[attr-defined]
