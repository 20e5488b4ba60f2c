"""The write transaction on the sign-in's path, at the cost of its statements.

A sign-in writes five or six rows in one transaction (the user, the pending name, the refresh
token, the session, the audit entry, maybe the welcome mail). Through the async engine each
statement is its own round of event-loop and thread hand-offs: on SQLite aiosqlite's worker
thread takes about four hops per statement (cursor, execute, fetch, close), each a wake-up of
another thread; on PostgreSQL each statement spawns a greenlet. Here the transaction is a plain
function of a synchronous :class:`sqlalchemy.Connection`, and :meth:`Writes.run` runs the whole
of it in one hop:

- on SQLite, in a thread of its own with a connection of the standard library's ``sqlite3``,
  inside ``BEGIN IMMEDIATE`` (the write lock is taken first, so a transaction that reads
  before it writes cannot fail to upgrade its lock; another writer waits in SQLite's busy
  handler, in that thread, never on the event loop). One thread, so this process's sign-ins
  queue for the lock in arrival order;
- on PostgreSQL, in ``AsyncConnection.run_sync``: one greenlet for the whole transaction.

The function must only run statements (no ``await``, no network): on SQLite it holds the
write lock while it runs. docs/performance.md#sqlite-writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import SQLITE_BUSY_TIMEOUT, sqlite_pragmas

__all__ = ["Writes"]

T = TypeVar("T")


class Writes:
    """Run ``fn(connection)`` in one transaction, committed when it returns."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self._sqlite = _sqlite_writer(url.set(drivername="sqlite+pysqlite"))
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writes")

    async def run(self, fn: Callable[[Connection], T]) -> T:
        if self._thread is not None:
            return await asyncio.get_running_loop().run_in_executor(
                self._thread, self._sqlite_transaction, fn
            )
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    def _sqlite_transaction(self, fn: Callable[[Connection], T]) -> T:
        assert self._sqlite is not None
        with self._sqlite.begin() as conn:
            return fn(conn)

    def close(self) -> None:
        """Wait for the transaction running (if any), then close the thread and connection."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._sqlite is not None:
            self._sqlite.dispose()


def _sqlite_writer(url: Any) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False},
        pool_size=1,
        max_overflow=0,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN is turned off, so that "begin" below decides.
        dbapi_connection.isolation_level = None
        sqlite_pragmas(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
