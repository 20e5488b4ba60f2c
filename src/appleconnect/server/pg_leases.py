"""Connections of the engine's pool that the hot reads on PostgreSQL keep between reads.

A checkout from SQLAlchemy's pool, and the checkin after it, run in a greenlet (the pool may
connect, recycle or close a connection, which is IO on the event loop), and a greenlet per read
costs more than asyncpg's work for the query: the greenlet, its switches around every
``await``, a frame stack mapped and unmapped, the pool's events. So the reads keep a few of the
connections they checked out: a read takes an idle one, runs its statement on it with a plain
``await`` and puts it back, no greenlet and no pool call on the way. When all are in use, a
read waits for one (a read holds its connection for one round trip) rather than check out
another, at most :data:`WAIT_SECONDS`.

The pool still owns them, and they count as checked out (the metrics' connections in use). A
kept connection goes back to the pool (checked in, in a greenlet) when

- it was taken more than :data:`LEASE_SECONDS` ago: the pool's recycling then applies to it at
  its next checkout, as to any other;
- the pool was invalidated after it was taken (a disconnect seen on any path: the database
  restarted, every older connection is gone);
- a read on it failed (the caller invalidates it first when the connection is lost);
- the reads are closed (before the engine is disposed).

At most a quarter of the pool's size is kept (:func:`how_many`), so the writes always have
most of it; a pool of fewer than four connections keeps none.
docs/performance.md#postgresql-hot-reads.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.pool import Pool, PoolProxiedConnection
from sqlalchemy.pool.base import _ConnectionFairy
from sqlalchemy.util import greenlet_spawn

__all__ = ["LEASE_SECONDS", "MAX_KEPT", "WAIT_SECONDS", "Lease", "Leases", "how_many"]

MAX_KEPT = 4
"""Connections the reads keep at most, idle or in use (:func:`how_many`)."""
LEASE_SECONDS = 30.0
"""Seconds a connection stays with the reads before it goes back to the pool."""
WAIT_SECONDS = 0.1
"""Seconds a read waits for a kept connection before it checks one out of the pool instead
(a read stuck on a connection must not hold the others up)."""


def how_many(pool: Pool) -> int:
    """The connections the reads may keep: a quarter of a queue pool's size, at most
    :data:`MAX_KEPT`; none for a pool without a fixed size."""
    size = getattr(pool, "size", None)
    return min(MAX_KEPT, size() // 4) if callable(size) else 0


@dataclass(slots=True)
class Lease:
    """A connection checked out of the pool and kept by the reads."""

    connection: PoolProxiedConnection
    driver: Any
    taken: float  # time.time(): the clock of the pool's invalidation time
    until: float  # time.monotonic()


class Leases:
    """The connections kept: the idle ones, how many exist (idle or in use), and the reads
    waiting for one."""

    def __init__(self, pool: Pool, keep: int | None = None) -> None:
        self.pool = pool
        self.keep = how_many(pool) if keep is None else keep
        self.idle: list[Lease] = []
        self.count = 0
        self.closed = False
        self.waiting: deque[asyncio.Future[Lease | None]] = deque()

    async def take(self) -> Lease | None:
        """A kept connection still good to use, or ``None``: then the caller checks one out of
        the pool (and may keep it). When all :attr:`keep` are in use, the read waits for one
        (up to :data:`WAIT_SECONDS`, first come first served) rather than check out another: a
        read holds its connection for one round trip. One that is no longer good (too old,
        older than the pool's invalidation) goes back to the pool on the way."""
        while True:
            lease = self.idle.pop() if self.idle else await self._wait()
            if lease is None:
                return None
            if lease.until > time.monotonic() and lease.taken >= self.pool._invalidate_time:
                return lease
            await self.give_back(lease)

    async def _wait(self) -> Lease | None:
        if self.closed or self.count < self.keep:
            return None
        waiter: asyncio.Future[Lease | None] = asyncio.get_running_loop().create_future()
        timer = waiter.get_loop().call_later(WAIT_SECONDS, _expire, waiter)
        self.waiting.append(waiter)
        try:
            return await waiter
        except BaseException:
            handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
            if handed is not None:  # handed over as this read was cancelled: to the next
                self.release_now(handed)
            raise
        finally:
            timer.cancel()

    def adopt(self, connection: PoolProxiedConnection) -> bool:
        """Keep ``connection`` (checked out by a read on the pool's path, which went well) if
        fewer than :attr:`keep` are kept; ``False``: the caller checks it in."""
        if self.closed or self.count >= self.keep:
            return False
        driver = connection.driver_connection
        self.count += 1
        self.release_now(Lease(connection, driver, time.time(), time.monotonic() + LEASE_SECONDS))
        return True

    def release_now(self, lease: Lease) -> None:
        """``lease`` is free: to the first read waiting for one, else idle."""
        if not self._hand(lease):
            self.idle.append(lease)

    def _hand(self, lease: Lease | None) -> bool:
        """Wake the first read still waiting with ``lease`` (``None``: check one out); whether
        there was one (a read cancelled or timed out while waiting is skipped)."""
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(lease)
                return True
        return False

    async def release(self, lease: Lease) -> None:
        """After a read on ``lease``: free again, or back to the pool if the reads closed."""
        if self.closed:
            await self.give_back(lease)
        else:
            self.release_now(lease)

    def vacate(self) -> None:
        """One kept connection is gone (given back, or lost): a waiting read checks one out."""
        self.count -= 1
        self._hand(None)

    async def give_back(self, lease: Lease) -> None:
        """Check ``lease``'s connection in (invalidated or not), in a greenlet."""
        self.vacate()
        await greenlet_spawn(checkin, lease.connection)

    async def close(self) -> None:
        """Give the idle connections back; those in use go back after their read; the reads
        waiting check one out of the pool."""
        self.closed = True
        while self._hand(None):
            pass
        while self.idle:
            await self.give_back(self.idle.pop())


def _expire(waiter: asyncio.Future[Lease | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)  # waited long enough: the pool's path


def checkin(connection: PoolProxiedConnection) -> None:
    """Back to the pool without the reset's rollback: a read begins no transaction, so there is
    none to end (as ``Connection.close`` does after ending its own)."""
    cast(_ConnectionFairy, connection)._close_special(transaction_reset=True)
