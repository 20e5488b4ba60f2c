"""Rate limits per client IP and per API key, shared by every process through the database.

Fixed windows of ``rate_limit_window`` seconds, one counter row per client (bucket) in the
database: a client can at most double its rate across a window boundary.

Writing the counter on every request would make every request, reads included, a database
write. Instead each process counts in memory and merges its counts into the database's
(``INSERT .. ON CONFLICT DO UPDATE .. RETURNING``, which also tells it the total of every
process) every ``rate_limit_sync`` seconds, in one transaction for all its buckets; a bucket
whose total, as this process last saw it, plus its own unmerged hits passes half its limit is
written on every request, so near a limit the count is exact. The trade-off, across P
processes: for up to ``rate_limit_sync`` seconds the other processes' unmerged hits (each under
half the limit) are not seen, so a client spreading its requests over processes may pass a
limit by up to (P - 1) x limit / 2 within that time; one process never passes it. With
``rate_limit_sync = 0`` every request is written and the limits are exact across processes.
docs/service.md#rate-limits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from . import store
from .db import DbSession
from .errors import ServiceError
from .settings import Settings

__all__ = ["RateLimiter", "rate_limited"]

log = logging.getLogger(__name__)

_IPV6_PREFIX = 64
_KNOWN_ADDRESSES = 4096
Sessions = async_sessionmaker[DbSession]


class RateLimiter:
    """Count requests and raise ``rate_limited`` (429) over a limit (see the module's text)."""

    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        self.window = settings.rate_limit_window
        self.per_ip = settings.rate_limit_per_ip
        self.per_key = settings.rate_limit_per_key
        self.sync = settings.rate_limit_sync
        self.exempt = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.rate_limit_exempt
        )
        self.clock = clock
        self._window_start = -1
        self._seen: dict[str, int] = {}  # bucket: the shared total as last read
        self._unsynced: dict[str, int] = {}  # bucket: hits of this process not yet written
        self._sync_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._buckets: dict[str, str | None] = {}  # client address: its bucket

    def ip_bucket(self, host: str | None) -> str | None:
        """The rate-limit bucket of a client address, or ``None`` when it is not limited."""
        if not self.per_ip:
            return None
        return self.address_bucket(host)

    def address_bucket(self, host: str | None) -> str | None:
        """The bucket of a client address, or ``None`` for an exempt (or unknown) one.

        An IPv6 client is counted by its /64, the block one subscriber usually holds, so that
        rotating through its own addresses does not multiply its allowance. The answers for
        the last :data:`_KNOWN_ADDRESSES` addresses are kept (parsing one costs more than the
        rest of the count).
        """
        if not host:
            return None
        try:
            return self._buckets[host]
        except KeyError:
            pass
        bucket = self._bucket_of(host)
        if len(self._buckets) >= _KNOWN_ADDRESSES:
            self._buckets.clear()
        self._buckets[host] = bucket
        return bucket

    def _bucket_of(self, host: str) -> str | None:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return f"ip:{host[:80]}"  # not an IP (a test client or a Unix socket peer)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.exempt):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            return f"ip:{ipaddress.ip_network(f'{address}/{_IPV6_PREFIX}', strict=False)}"
        return f"ip:{address}"

    # Each returns ``None`` within the limit, else the seconds until the window ends.

    async def hit_ip(self, *, sessions: Sessions, host: str | None) -> int | None:
        bucket = self.ip_bucket(host)
        if bucket is None:
            return None
        return await self._hit(sessions, bucket, self.per_ip)

    async def hit_key(self, *, sessions: Sessions, key_id: int) -> int | None:
        if not self.per_key:
            return None
        return await self._hit(sessions, f"key:{key_id}", self.per_key)

    async def _hit(self, sessions: Sessions, bucket: str, limit: int) -> int | None:
        now = self.clock()
        start = int(now // self.window) * self.window
        if start != self._window_start:
            self._new_window(start)
        unsynced = self._unsynced.get(bucket, 0) + 1
        if self.sync and 2 * (self._seen.get(bucket, 0) + unsynced) <= limit:
            self._unsynced[bucket] = unsynced
            self._schedule_sync(sessions)
            return None
        self._unsynced.pop(bucket, None)
        async with sessions() as db:
            hits, current = await store.count_hit(
                db=db, bucket=bucket, window_start=start, hits=unsynced
            )
            await db.commit()
        if current == start:
            self._seen[bucket] = hits
        if hits <= limit:
            return None
        return max(1, math.ceil(current + self.window - now))

    def _new_window(self, start: int) -> None:
        """Forget the counts of the window that ended (the database restarts its rows too)."""
        self._window_start = start
        self._seen.clear()
        self._unsynced.clear()

    def _schedule_sync(self, sessions: Sessions) -> None:
        if self._sync_handle is None:
            loop = asyncio.get_running_loop()
            self._sync_handle = loop.call_later(self.sync, self._start_sync, sessions)

    def _start_sync(self, sessions: Sessions) -> None:
        self._sync_handle = None
        task = asyncio.ensure_future(self.sync_now(sessions))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sync_now(self, sessions: Sessions) -> None:
        """Write this process's unmerged counts, in one transaction, and read the totals."""
        pending, start = self._unsynced, self._window_start
        if not pending:
            return
        self._unsynced = {}
        try:
            async with sessions() as db:
                totals = {
                    bucket: await store.count_hit(
                        db=db, bucket=bucket, window_start=start, hits=hits
                    )
                    for bucket, hits in sorted(pending.items())
                }
                await db.commit()
        except Exception:  # the counts stay unmerged, for the next try
            log.warning("rate-limit counts could not be written", exc_info=True)
            for bucket, hits in pending.items():
                self._unsynced[bucket] = self._unsynced.get(bucket, 0) + hits
            return
        if start == self._window_start:
            self._seen.update({b: hits for b, (hits, cur) in totals.items() if cur == start})

    async def close(self, sessions: Sessions) -> None:
        """Write what is unmerged (at shutdown)."""
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        await self.sync_now(sessions)


def rate_limited(seconds: int, *, field: str | None = None) -> ServiceError:
    """The 429 error, with ``Retry-After`` in whole seconds (RFC 9110, 10.2.3)."""
    return ServiceError(
        "rate_limited",
        f"Too many requests; try again in {seconds} second{'s' if seconds != 1 else ''}.",
        status=429,
        field=field,
        headers={"Retry-After": str(seconds)},
    )
