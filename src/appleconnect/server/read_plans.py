"""A hot ``SELECT`` compiled once, run on the driver directly, its row as SQLAlchemy returns it.

SQLAlchemy's execution of one small ``SELECT`` (a ``Connection``, an execution context, a
cursor wrapper, a ``Result`` and its ``Row``) costs several times the driver's own work for an
indexed read. The reads on every request's path (:mod:`.reads`) therefore compile their
statement once for the dialect (:class:`CompiledReads`), hand the driver the SQL and the
parameters in order, and turn the driver's record into a dict with the same processors
SQLAlchemy applies (``UTCDateTime``'s aware UTC datetimes...), so the values are the same in
type and value (the tests compare both paths). :mod:`.pg_reads` runs the plans on asyncpg;
:mod:`.sqlite_reads` on SQLite's ``sqlite3``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable, Select
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["MAX_STATEMENTS", "CompiledReads", "ReadPlan"]

# The reads are statements built once, at import; past this many, a statement is run by
# SQLAlchemy instead of being compiled and kept.
MAX_STATEMENTS = 64

_Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """A statement compiled for the dialect, with what turns params and a record into a row."""

    sql: str
    names: tuple[str, ...]  # the bound parameters in the order the driver takes them
    binds: tuple[tuple[int, _Processor], ...]  # (position, bind processor) where there is one
    keys: tuple[str, ...]  # the row's keys, as ``Row._asdict()`` names them
    results: tuple[tuple[int, _Processor], ...]  # (column, result processor) where there is one

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        args = [params[name] for name in self.names]
        for position, process in self.binds:
            args[position] = process(args[position])
        return args

    def row(self, record: Iterable[Any]) -> dict[str, Any]:
        values = list(record)
        for column, process in self.results:
            values[column] = process(values[column])
        return dict(zip(self.keys, values, strict=True))


class CompiledReads:
    """The statements of one dialect that can take the direct path, compiled once."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._compiled: dict[Executable, SQLCompiler | None] = {}
        self._plans: dict[Executable, ReadPlan] = {}

    def takes(self, statement: Executable) -> bool:
        """Whether ``statement`` can take the direct path: a ``SELECT`` whose parameters are
        each given once at execution (``bindparam("name")``; no value in the statement, no
        expanding ``IN``), one of the first :data:`MAX_STATEMENTS` seen. Compiled once."""
        if statement not in self._compiled:
            if len(self._compiled) >= MAX_STATEMENTS:
                return False  # statements built per call would fill the cache: not for this path
            self._compiled[statement] = _compiled(statement, self.dialect)
        return self._compiled[statement] is not None

    def sql(self, statement: Executable) -> str:
        """The SQL of a statement :meth:`takes` accepted."""
        compiled = self._compiled[statement]
        assert compiled is not None
        return compiled.string

    def plan(self, statement: Executable) -> ReadPlan | None:
        """The plan made for ``statement`` (:meth:`make_plan`), if any yet."""
        return self._plans.get(statement)

    def make_plan(self, statement: Executable, coltypes: Sequence[Any] | None = None) -> ReadPlan:
        """The plan of a statement :meth:`takes` accepted. ``coltypes``: the driver's type of
        each column, where a result processor depends on it (asyncpg's, for ``Numeric``)."""
        compiled = self._compiled[statement]
        assert compiled is not None
        assert isinstance(statement, Select)
        dialect = self.dialect
        names = tuple(compiled.positiontup or ())
        columns = list(statement.selected_columns)
        types = list(coltypes) if coltypes is not None else [None] * len(columns)
        plan = ReadPlan(
            sql=compiled.string,
            names=names,
            binds=_processors(
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in names
            ),
            keys=tuple(statement.selected_columns.keys()),
            results=_processors(
                column.type.dialect_impl(dialect).result_processor(dialect, coltype)
                for column, coltype in zip(columns, types, strict=True)
            ),
        )
        self._plans[statement] = plan
        return plan


def _compiled(statement: Executable, dialect: Dialect) -> SQLCompiler | None:
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


def _processors(found: Iterable[_Processor | None]) -> tuple[tuple[int, _Processor], ...]:
    return tuple((i, process) for i, process in enumerate(found) if process is not None)
