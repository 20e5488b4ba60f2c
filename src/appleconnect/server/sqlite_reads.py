"""One-row reads on SQLite straight on ``sqlite3``: the hot path of every session check.

A read-only connection of the standard library's ``sqlite3`` (``query_only``, so nothing can
be written through it), used on the event loop's thread: in WAL mode an indexed read takes
microseconds and never waits for a writer (a reader sees the last committed state); it waits
at most :data:`SQLITE_READ_TIMEOUT` seconds for the rare lock a checkpoint holds. The
statement is compiled once (:mod:`.read_plans`) and its row given the values SQLAlchemy would
return; an error is wrapped as SQLAlchemy wraps it (a ``DBAPIError`` around ``sqlite3``'s), so
a locked or missing database is judged as on every other path. Statements of another shape,
and every statement while listeners watch the reader's engine (tracing), run through that
engine instead (SQLAlchemy's execution costs about four times the query here).
docs/performance.md#sqlite-reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL
from sqlalchemy.sql import Executable

from .read_plans import CompiledReads

__all__ = ["SQLITE_READ_TIMEOUT", "SqliteReads"]

SQLITE_READ_TIMEOUT = 1.0


class SqliteReads:
    """Run a read-only statement on a SQLite file and return its first row as a mapping."""

    def __init__(self, url: URL) -> None:
        self.path = url.database or ""
        self.engine = _reader_engine(url.set(drivername="sqlite+pysqlite"))
        self.compiled = CompiledReads(self.engine.dialect)
        self._connection: sqlite3.Connection | None = None

    def first(self, statement: Executable, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        engine = self.engine
        if engine._has_events or engine.dialect._has_events or not self.compiled.takes(statement):
            with engine.connect() as conn:
                row = conn.execute(statement, params).first()
            return None if row is None else cast(Mapping[str, Any], row._mapping)
        plan = self.compiled.plan(statement) or self.compiled.make_plan(statement)
        try:
            record = self._connect().execute(plan.sql, plan.arguments(params)).fetchone()
        except sqlite3.Error as error:
            raise exc.DBAPIError.instance(
                plan.sql,
                dict(params),
                error,
                sqlite3.Error,
                hide_parameters=engine.hide_parameters,
                dialect=engine.dialect,
            ) from error
        return None if record is None else plan.row(record)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = sqlite3.connect(
                self.path, timeout=SQLITE_READ_TIMEOUT, check_same_thread=False
            )
            _read_only(self._connection)
        return self._connection

    def dispose(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.engine.dispose()


def _read_only(connection: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_READ_TIMEOUT * 1000)}")
    cursor.close()


def _reader_engine(url: URL) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_READ_TIMEOUT, "check_same_thread": False},
        pool_size=1,
        max_overflow=0,
        # Nothing can be written through it, so there is nothing to roll back on return.
        pool_reset_on_return=None,
    )
    event.listen(engine, "connect", lambda dbapi_connection, _record: _read_only(dbapi_connection))
    return engine
