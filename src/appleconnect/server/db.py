"""The database engine, sessions, and migrations applied at start."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from .files import private_dir, private_sqlite
from .settings import Settings

__all__ = ["DbSession", "create_engine", "migrate", "session_factory"]

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite write waits for the lock another connection (or process) holds."""
PG_CONNECTIONS = 30
"""Connections to PostgreSQL a service process opens at most, as needed, and keeps
(docs/service.md#deployment-with-postgresql)."""
PG_CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection to PostgreSQL (asyncpg's default is 60): a server that does not
answer, rather than refuse, is then a 503 ``database_unavailable`` within seconds."""
# Any constant: serialises migrations of several processes starting together on PostgreSQL.
_PG_MIGRATION_LOCK = 0x61706C63


class _WithoutContextLines(logging.Filter):
    """Alembic logs two lines at INFO each time it looks at a database ("Context impl
    SQLiteImpl.", "Will assume non-transactional DDL."): at every start and, through the
    schema check, at every ``GET /readyz``, which a load balancer asks every few seconds.
    They say nothing to an operator; the lines of a migration ("Running upgrade ...") stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl ", "Will assume "))


logging.getLogger("alembic.runtime.migration").addFilter(_WithoutContextLines())


def create_engine(settings: Settings) -> AsyncEngine:
    """An async engine for the configured database; SQLite gets WAL and a busy timeout, and
    its files mode 0600 in a 0700 data directory (:mod:`.files`)."""
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        private_dir(Path(settings.data_dir))
        private_sqlite(url)
        # One connection per process: every statement of the process goes through one queue
        # in arrival order (SQLAlchemy's pool hands the connection out first come, first served)
        # instead of several connections sleeping in SQLite's busy handler, which starves
        # writers under load (docs/performance.md#sqlite-one-connection).
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT},
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
        )
        event.listen(
            engine.sync_engine, "connect", lambda connection, _record: sqlite_pragmas(connection)
        )
        return engine
    # No pre-ping (a round trip before every checkout); connections are recycled instead, and
    # one that the server dropped fails its statement, which the caller sees as a 503.
    # At most PG_CONNECTIONS per process, opened as needed and kept (no overflow: with 10 kept
    # and 20 more as overflow, a load around 10 requests at once closed a connection on one
    # return and opened one on the next checkout, a connect and TLS negotiation each time).
    return create_async_engine(
        url,
        pool_recycle=1800,
        pool_size=PG_CONNECTIONS,
        max_overflow=0,
        connect_args={"timeout": PG_CONNECT_TIMEOUT, **pgbouncer_connect_args(settings)},
    )


def sqlite_pragmas(dbapi_connection: Any) -> None:
    """What every connection that writes to the SQLite database sets: WAL (readers never wait
    for the writer), ``synchronous=NORMAL`` (no fsync per commit in WAL; a commit survives a
    killed process), foreign keys, and :data:`SQLITE_BUSY_TIMEOUT`."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.close()


def pgbouncer_connect_args(settings: Settings) -> dict[str, Any]:
    """asyncpg's options behind PgBouncer in transaction pooling (``database_pgbouncer``).

    There, consecutive transactions of one client connection may run on different server
    connections, so a statement prepared in one is missing in the next ("prepared statement
    ... does not exist") and two clients' numbered names collide on one server connection
    (``DuplicatePreparedStatementError``). So: no statement cache in asyncpg nor in SQLAlchemy,
    and each statement prepared under a name no other connection uses, as SQLAlchemy's
    documentation of its asyncpg dialect advises. Empty when the setting is off.
    """
    if not settings.database_pgbouncer:
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
    }


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def session_factory(engine: AsyncEngine) -> async_sessionmaker[DbSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    command.upgrade(_alembic_config(connection), "head")


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending migration (idempotent, safe with several processes)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
