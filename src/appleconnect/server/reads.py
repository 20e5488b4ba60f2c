"""The reads on every request's path (a session's user, an API key), at the cost of the query.

On PostgreSQL a read is one statement on the async engine in autocommit mode: no ``BEGIN``
before it and no ``ROLLBACK`` after it, one round trip instead of three (a single statement
reads one consistent snapshot anyway). Not behind PgBouncer in transaction pooling
(``database_pgbouncer``): there a statement outside a transaction may be prepared on one server
connection and executed on another, so the read keeps its transaction.
On SQLite the async engine runs each statement through aiosqlite's worker thread, four thread
hops per statement (cursor, execute, fetch, close) that cost far more than the query; these
reads instead go through a connection of the standard library's ``sqlite3`` used on the event
loop's thread: an indexed read in WAL mode takes tens of microseconds and never waits for a
writer (WAL readers see the last committed state). The connection is ``query_only``, so
nothing can write through it, and waits at most :data:`SQLITE_READ_TIMEOUT` seconds for the
rare lock a checkpoint holds. docs/performance.md#sqlite-reads.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

__all__ = ["SQLITE_READ_TIMEOUT", "Reads"]

SQLITE_READ_TIMEOUT = 1.0


class Reads:
    """Run a read-only statement and return its first row."""

    def __init__(self, engine: AsyncEngine, *, autocommit: bool = True) -> None:
        self.engine = engine
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine
        )
        self._sqlite: Engine | None = None
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self._sqlite = _sqlite_reader(url.set(drivername="sqlite+pysqlite"))

    async def first(self, statement: Executable, params: dict[str, Any]) -> Row[Any] | None:
        if self._sqlite is not None:
            with self._sqlite.connect() as conn:
                return conn.execute(statement, params).first()
        async with self._autocommit.connect() as conn:
            return (await conn.execute(statement, params)).first()

    @property
    def engines(self) -> list[Engine]:
        """The engines the reads run on (the async engine's, and SQLite's reader), to trace."""
        return [self.engine.sync_engine, *([self._sqlite] if self._sqlite is not None else [])]

    def dispose(self) -> None:
        if self._sqlite is not None:
            self._sqlite.dispose()


def _sqlite_reader(url: Any) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_READ_TIMEOUT, "check_same_thread": False},
        pool_size=1,
        max_overflow=0,
        # Nothing can be written through it, so there is nothing to roll back on return.
        pool_reset_on_return=None,
    )

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_READ_TIMEOUT * 1000)}")
        cursor.close()

    return engine
