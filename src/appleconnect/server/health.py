"""The database's state as this process sees it, and which errors mean "it cannot be reached".

A database restart or outage is a temporary condition, not a bug: the requests that need the
database answer 503 ``database_unavailable`` with ``Retry-After`` (:mod:`.error_handlers`), the
process logs one line when the database goes away and one when it is back, and nothing else
changes. Every request still tries the database, so the first one after the database accepts
connections again succeeds (no circuit breaker to wait for).

:class:`DatabaseHealth` holds the state and its counters as plain attributes, for a readiness
check and metrics to read; :func:`is_database_unavailable` tells an outage from a bug.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from .errors import ServiceError

__all__ = [
    "CHECK_TIMEOUT",
    "RETRY_AFTER",
    "DatabaseHealth",
    "database_unavailable",
    "is_database_unavailable",
]

log = logging.getLogger(__name__)

RETRY_AFTER = 5
"""Seconds a client is asked to wait (``Retry-After``) while the database is unavailable."""

CHECK_TIMEOUT = 2.0
"""Seconds :meth:`DatabaseHealth.check` waits for the database."""

# SQLSTATEs of a server that is away: class 08 (connection exception), shutting down or starting
# up (57P01-57P03), too many connections (53300).
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# SQLite's errors of a database file that cannot be used right now (not of a wrong query).
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error")
_DRIVER_MODULES = ("sqlalchemy.", "asyncpg", "aiosqlite")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver error it wraps, and what that was raised from (a few levels)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return chain


def _raised_by_driver(tb: TracebackType | None) -> bool:
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError | OSError):  # pool exhausted; socket errors
        return True
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(state, str) and (state.startswith("08") or state in _UNAVAILABLE_STATES):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return str(exc).lower().startswith(_SQLITE_UNAVAILABLE)
    return False


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (or is starting, stopping, full).

    A SQLAlchemy error is judged by the driver error it wraps; any other error (the driver's
    connect raises ``ConnectionRefusedError`` as it is) only counts when it was raised inside
    the database driver, so that an unrelated socket error is not taken for an outage.
    """
    if not isinstance(exc, sa_exc.SQLAlchemyError) and not _raised_by_driver(exc.__traceback__):
        return False
    return any(_is_outage(cause) for cause in _causes(exc))


def _describe(exc: BaseException) -> str:
    cause = _causes(exc)[-1]
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"[:300]


UNAVAILABLE = "The service's database cannot be reached right now; try again in a few seconds."


def database_unavailable(message: str = UNAVAILABLE) -> ServiceError:
    """The error every request that needs the unavailable database answers; ``message``: what
    a route tells its users to do instead of the general advice (:data:`OUTAGE_ADVICE`)."""
    return ServiceError(
        "database_unavailable", message, status=503, headers={"Retry-After": str(RETRY_AFTER)}
    )


OUTAGE_ADVICE = "outage_advice"
"""The name, in ``request.state``, of what a request's user should do if the database fails
now (a route sets it as it goes: what is safe to repeat changes along the way)."""


@dataclass
class DatabaseHealth:
    """Whether the database was reachable at the last attempt, and since when.

    :meth:`failed` and :meth:`succeeded` log only when the state changes. The counters are
    plain attributes for metrics: ``outages`` (times the database went away) and
    ``unavailable_answers`` (requests answered 503 ``database_unavailable``).
    """

    available: bool = True
    since: float = field(default_factory=time.monotonic)
    reason: str = ""
    outages: int = 0
    unavailable_answers: int = 0

    def failed(self, exc: BaseException) -> None:
        """Record an attempt that found the database unavailable."""
        if not self.available:
            return
        self.available, self.since, self.reason = False, time.monotonic(), _describe(exc)
        self.outages += 1
        log.error(
            "database unavailable (%s); answering 503 database_unavailable until it is back",
            self.reason,
        )

    def succeeded(self) -> None:
        """Record a connection that worked."""
        if self.available:
            return
        down_for = time.monotonic() - self.since
        self.available, self.since, self.reason = True, time.monotonic(), ""
        log.warning("database available again after %.1f s", down_for)

    def watch(self, engine: AsyncEngine) -> None:
        """Count every connection the engine's pool hands out (after its ping) as a success."""

        def _checkout(*_args: Any) -> None:
            self.succeeded()

        event.listen(engine.sync_engine.pool, "checkout", _checkout)

    async def check(self, engine: AsyncEngine) -> bool:
        """Try the database now (``SELECT 1`` within :data:`CHECK_TIMEOUT` seconds), for a
        readiness check; returns whether it is available."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except TimeoutError as exc:
            self.failed(exc)
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            self.failed(exc)
        return self.available
