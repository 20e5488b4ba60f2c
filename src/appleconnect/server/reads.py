"""The reads on every request's path (a session's user, an API key), at the cost of the query.

A read returns its first row as a mapping (column name to value), the same on every backend.
On PostgreSQL a read is one statement outside a transaction: no ``BEGIN`` before it and no
``ROLLBACK`` after it, one round trip instead of three (a single statement reads one
consistent snapshot anyway). It runs on asyncpg directly, on a connection of the engine's
pool, with the statement compiled once and asyncpg's prepared statement cached per connection
(:mod:`.pg_reads`, docs/performance.md#postgresql-hot-reads), its values those SQLAlchemy
would return (aware UTC datetimes...). While listeners watch the engine's statements
(tracing), and for a statement of another shape (an expanding ``IN``), it runs on SQLAlchemy's
engine in autocommit mode instead, so that they see it. Not behind PgBouncer in transaction
pooling (``database_pgbouncer``): there a statement outside a transaction may be prepared on
one server connection and executed on another, and no prepared statement may be kept, so the
read keeps its transaction and SQLAlchemy's path.
On SQLite the async engine runs each statement through aiosqlite's worker thread, four thread
hops per statement (cursor, execute, fetch, close) that cost far more than the query; these
reads instead go through a read-only connection of the standard library's ``sqlite3`` used on
the event loop's thread (:mod:`.sqlite_reads`, docs/performance.md#sqlite-reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from .pg_reads import PgReads
from .sqlite_reads import SqliteReads

__all__ = ["Reads"]


class Reads:
    """Run a read-only statement and return its first row as a mapping."""

    def __init__(self, engine: AsyncEngine, *, autocommit: bool = True) -> None:
        self.engine = engine
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine
        )
        self._sqlite: SqliteReads | None = None
        self._pg: PgReads | None = None
        url = engine.url
        if (
            autocommit
            and url.get_backend_name() == "postgresql"
            and url.get_driver_name() == "asyncpg"
        ):
            self._pg = PgReads(engine)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self._sqlite = SqliteReads(url)

    async def first(
        self, statement: Executable, params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        if self._sqlite is not None:
            return self._sqlite.first(statement, params)
        pg = self._pg
        if pg is not None and pg.takes(statement) and not pg.observed:
            return await pg.first(statement, params)
        async with self._autocommit.connect() as connection:
            row = (await connection.execute(statement, params)).first()
        return None if row is None else cast(Mapping[str, Any], row._mapping)

    @property
    def engines(self) -> list[Engine]:
        """The engines the reads run on (the async engine's, and SQLite's reader), to trace;
        a statement listener on one moves the reads to SQLAlchemy's path, where it sees them."""
        reader = [self._sqlite.engine] if self._sqlite is not None else []
        return [self.engine.sync_engine, *reader]

    async def dispose(self) -> None:
        """Give back what the reads hold (before the engine is disposed)."""
        if self._pg is not None:
            await self._pg.leases.close()
        if self._sqlite is not None:
            self._sqlite.dispose()
