"""One-row reads on PostgreSQL straight on asyncpg: the hot path of every session check.

SQLAlchemy's execution of one SELECT (a ``Connection``, its execution context, the adapted
cursor, a ``Result`` and its ``Row``, three greenlets) costs several times asyncpg's own work
for the query. Here a statement is compiled once for the dialect and run with asyncpg's
``fetchrow`` on a connection checked out of the engine's own pool, in one greenlet: the pool's
size, recycling, invalidation and events (the metrics' connections in use) are unchanged, and
asyncpg keeps the prepared statement in its cache of that connection. No transaction is
begun (one statement reads one consistent snapshot anyway), so the connection goes back to the
pool without the reset's rollback: there is nothing to roll back.

A row's values go through the result processors SQLAlchemy would apply (``UTCDateTime``'s and
any other), so they are the same in type and value; errors are wrapped the way SQLAlchemy
wraps them (a ``DBAPIError`` around the dialect's error; on a disconnect, the connection and
the pool's older connections invalidated), so a lost database answers 503 as on every path.
docs/performance.md#postgresql-hot-reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.pool.base import _ConnectionFairy
from sqlalchemy.sql import Executable
from sqlalchemy.util import await_only, greenlet_spawn

from .read_plans import CompiledReads, ReadPlan

__all__ = ["PgReads"]


class PgReads:
    """Run a plain ``SELECT`` (bound parameters only) on asyncpg and return its first row."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.compiled = CompiledReads(engine.dialect)

    def takes(self, statement: Executable) -> bool:
        """Whether ``statement`` can take this path (:meth:`.CompiledReads.takes`)."""
        return self.compiled.takes(statement)

    @property
    def observed(self) -> bool:
        """Whether listeners watch the engine's statements (tracing, a test counting them):
        then reads take SQLAlchemy's path, the one those listeners see."""
        sync = self.engine.sync_engine
        return bool(sync._has_events or sync.dialect._has_events)

    async def first(
        self, statement: Executable, params: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The first row of ``statement`` (one :meth:`takes`) as a dict, or ``None``."""
        return await greenlet_spawn(self._first, statement, params)

    def _first(self, statement: Executable, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """In a greenlet: check out, fetch, check in; the pool's IO (a connect, a recycle, a
        close of an overflow connection) may happen at either end."""
        sync = self.engine.sync_engine
        try:
            connection = sync.raw_connection()
        except sync.dialect.loaded_dbapi.Error as error:  # as ``Engine.connect`` wraps it
            raise self._dbapi_error(error, None, None) from error
        try:
            driver = connection.driver_connection
            assert driver is not None  # a connection out of the pool is a live one
            plan = self.compiled.plan(statement)
            try:
                if plan is None:
                    plan = self._plan(statement, driver)
                args = plan.arguments(params)
                record = await_only(driver.fetchrow(plan.sql, *args))
            except Exception as error:
                wrapped = self._wrapped(error, connection, statement, params)
                if wrapped is None:
                    raise
                raise wrapped from error
            except BaseException:
                # Cancelled mid-query: the protocol's state is unknown, the connection unusable.
                connection.invalidate()
                raise
            return None if record is None else plan.row(record)
        finally:
            # Back to the pool without the reset's rollback: no transaction was begun, so
            # there is none to end (as ``Connection.close`` does after ending its own).
            cast(_ConnectionFairy, connection)._close_special(transaction_reset=True)

    def _plan(self, statement: Executable, driver: Any) -> ReadPlan:
        """The plan of a statement, at its first run: its columns' types as PostgreSQL reports
        them (a result processor may depend on them, as ``Numeric``'s does)."""
        prepared = await_only(driver.prepare(self.compiled.sql(statement)))
        oids = [attribute.type.oid for attribute in prepared.get_attributes()]
        return self.compiled.make_plan(statement, oids)

    def _wrapped(
        self,
        error: Exception,
        connection: PoolProxiedConnection,
        statement: Executable,
        params: Mapping[str, Any],
    ) -> exc.StatementError | None:
        """``error`` as SQLAlchemy raises it (``Connection._handle_dbapi_exception``): the
        dialect's translation of the driver's error wrapped in a ``DBAPIError``, the connection
        invalidated on a disconnect, with every older connection of the pool (the database
        restarted: they are all gone). ``None`` for an error that is not the driver's: it is
        raised as it is, as SQLAlchemy does."""
        dialect = self.engine.dialect
        try:
            connection.dbapi_connection._handle_exception(error)  # type: ignore[union-attr]
        except dialect.loaded_dbapi.Error as translated:
            disconnect = dialect.is_disconnect(translated, connection.dbapi_connection, None)
            if disconnect:
                self.engine.sync_engine.pool._invalidate(connection, translated)
            return self._dbapi_error(translated, statement, params, disconnect)
        except Exception:
            return None
        return None  # pragma: no cover - _handle_exception always raises

    def _dbapi_error(
        self,
        error: Exception,
        statement: Executable | None,
        params: Mapping[str, Any] | None,
        disconnect: bool | None = None,
    ) -> exc.StatementError:
        dialect = self.engine.dialect
        if disconnect is None:
            disconnect = dialect.is_disconnect(cast(Any, error), None, None)
        return exc.DBAPIError.instance(
            None if statement is None else self.compiled.sql(statement),
            None if params is None else dict(params),
            error,
            dialect.loaded_dbapi.Error,
            hide_parameters=self.engine.sync_engine.hide_parameters,
            connection_invalidated=disconnect,
            dialect=dialect,
        )
