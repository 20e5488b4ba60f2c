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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.pool.base import _ConnectionFairy
from sqlalchemy.sql import Executable, Select
from sqlalchemy.sql.compiler import Compiled, SQLCompiler
from sqlalchemy.util import await_only, greenlet_spawn

__all__ = ["MAX_STATEMENTS", "PgReads"]

# The reads are statements built once, at import; past this many, a statement is run by
# SQLAlchemy instead of being compiled and kept.
MAX_STATEMENTS = 64

_Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Plan:
    """A statement compiled for the dialect, with what turns params and a record into a row."""

    sql: str
    names: tuple[str, ...]  # the bound parameters in the order of $1, $2...
    binds: tuple[tuple[int, _Processor], ...]  # (position, bind processor) where there is one
    keys: tuple[str, ...]  # the row's keys, as ``Row._asdict()`` names them
    results: tuple[tuple[int, _Processor], ...]  # (column, result processor) where there is one

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        args = [params[name] for name in self.names]
        for position, process in self.binds:
            args[position] = process(args[position])
        return args

    def row(self, record: Any) -> dict[str, Any]:
        values = list(record)
        for column, process in self.results:
            values[column] = process(values[column])
        return dict(zip(self.keys, values, strict=True))


class PgReads:
    """Run a plain ``SELECT`` (bound parameters only) on asyncpg and return its first row."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._compiled: dict[Executable, Compiled | None] = {}
        self._plans: dict[Executable, _Plan] = {}

    def takes(self, statement: Executable) -> bool:
        """Whether ``statement`` can take this path: a ``SELECT`` whose parameters are each
        given once at execution (``bindparam("name")``; no value in the statement, no
        expanding ``IN``), one of the first :data:`MAX_STATEMENTS` seen. Compiled once."""
        if statement not in self._compiled:
            if len(self._compiled) >= MAX_STATEMENTS:
                return False  # statements built per call would fill the cache: not for this path
            self._compiled[statement] = _compiled(statement, self.engine.dialect)
        return self._compiled[statement] is not None

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
            plan = self._plans.get(statement)
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

    def _plan(self, statement: Executable, driver: Any) -> _Plan:
        """The plan of a statement, at its first run: its columns' types as PostgreSQL reports
        them (a result processor may depend on them, as ``Numeric``'s does)."""
        compiled = self._compiled[statement]
        assert isinstance(compiled, SQLCompiler)
        assert isinstance(statement, Select)
        dialect = self.engine.dialect
        prepared = await_only(driver.prepare(compiled.string))
        oids = [attribute.type.oid for attribute in prepared.get_attributes()]
        names = tuple(compiled.positiontup or ())
        plan = _Plan(
            sql=compiled.string,
            names=names,
            binds=_processors(
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in names
            ),
            keys=tuple(statement.selected_columns.keys()),
            results=_processors(
                column.type.dialect_impl(dialect).result_processor(dialect, oid)
                for column, oid in zip(statement.selected_columns, oids, strict=True)
            ),
        )
        self._plans[statement] = plan
        return plan

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
            None if statement is None else str(self._compiled[statement]),
            None if params is None else dict(params),
            error,
            dialect.loaded_dbapi.Error,
            hide_parameters=self.engine.sync_engine.hide_parameters,
            connection_invalidated=disconnect,
            dialect=dialect,
        )


def _compiled(statement: Executable, dialect: Dialect) -> Compiled | None:
    if not isinstance(statement, Select):
        return None
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    names = compiled.positiontup or []
    if (
        compiled.literal_execute_params
        or compiled.post_compile_params
        or len(set(names)) != len(names)
        or not all(compiled.binds[name].required for name in names)
    ):
        return None
    return compiled


def _processors(found: Any) -> tuple[tuple[int, _Processor], ...]:
    return tuple((i, process) for i, process in enumerate(found) if process is not None)
