"""One-row reads on PostgreSQL straight on asyncpg: the hot path of every session check.

SQLAlchemy's execution of one SELECT (a ``Connection``, its execution context, the adapted
cursor, a ``Result`` and its ``Row``, three greenlets) costs several times asyncpg's own work
for the query. Here a statement is compiled once for the dialect and run with asyncpg's
``fetchrow``, and asyncpg keeps the prepared statement in its cache of the connection. The
connection is one the reads keep between reads (:mod:`.pg_leases`: a plain ``await``, no
greenlet and no pool call), or, when none is idle, one checked out of the engine's own pool in
a greenlet, which the reads may then keep. Either way the pool's size, recycling, invalidation
and events (the metrics' connections in use) apply. No transaction is begun (one statement
reads one consistent snapshot anyway), so a connection goes back to the pool without the
reset's rollback: there is nothing to roll back.

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
from sqlalchemy.sql import Executable
from sqlalchemy.util import await_only, greenlet_spawn

from .pg_leases import Lease, Leases, checkin
from .read_plans import CompiledReads, ReadPlan

__all__ = ["PgReads"]


class PgReads:
    """Run a plain ``SELECT`` (bound parameters only) on asyncpg and return its first row."""

    def __init__(self, engine: AsyncEngine, *, keep: int | None = None) -> None:
        self.engine = engine
        self.compiled = CompiledReads(engine.dialect)
        self.leases = Leases(engine.sync_engine.pool, keep)

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
        """The first row of ``statement`` (one :meth:`takes`) as a dict, or ``None``: on a
        connection the reads keep (:mod:`.pg_leases`) if one is idle and the statement was
        planned, otherwise on one checked out of the pool, in a greenlet."""
        plan = self.compiled.plan(statement)
        lease = None if plan is None else await self.leases.take()
        if plan is None or lease is None:
            return await greenlet_spawn(self._first, statement, params)
        return await self._on_lease(lease, plan, statement, params)

    async def _on_lease(
        self, lease: Lease, plan: ReadPlan, statement: Executable, params: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        try:
            record = await lease.driver.fetchrow(plan.sql, *plan.arguments(params))
        except Exception as error:
            wrapped = await greenlet_spawn(self._failed, lease, error, statement, params)
            if wrapped is None:
                raise
            raise wrapped from error
        except BaseException:
            # Cancelled mid-query: the protocol's state is unknown, the connection unusable.
            # Outside a greenlet the adapter closes its socket at once (SQLAlchemy's own way
            # for a connection the garbage collector finds), and the pool gets its record back.
            self.leases.vacate()
            lease.connection.invalidate()
            raise
        await self.leases.release(lease)
        return None if record is None else plan.row(record)

    def _failed(
        self, lease: Lease, error: Exception, statement: Executable, params: Mapping[str, Any]
    ) -> exc.StatementError | None:
        """In a greenlet: ``error`` wrapped (:meth:`_wrapped`), the connection back to the pool."""
        self.leases.vacate()
        try:
            return self._wrapped(error, lease.connection, statement, params)
        finally:
            checkin(lease.connection)

    def _first(self, statement: Executable, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """In a greenlet: check out, fetch, then keep the connection (:meth:`.Leases.adopt`) or
        check it in; the pool's IO (a connect, a recycle, a close) may happen at either end."""
        sync = self.engine.sync_engine
        try:
            connection = sync.raw_connection()
        except sync.dialect.loaded_dbapi.Error as error:  # as ``Engine.connect`` wraps it
            raise self._dbapi_error(error, None, None) from error
        try:
            row = self._fetch(connection, statement, params)
        except BaseException:
            checkin(connection)
            raise
        if not self.leases.adopt(connection):
            checkin(connection)
        return row

    def _fetch(
        self, connection: PoolProxiedConnection, statement: Executable, params: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        driver = connection.driver_connection
        assert driver is not None  # a connection out of the pool is a live one
        plan = self.compiled.plan(statement)
        try:
            if plan is None:
                plan = self._plan(statement, driver)
            record = await_only(driver.fetchrow(plan.sql, *plan.arguments(params)))
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
