"""Rate limits per client IP and per API key, counted in the database.

Every process of a deployment shares the counters (design: nothing that must be shared lives
in one process's memory). Fixed windows of ``rate_limit_window`` seconds: simple, one row per
client, exact across processes; a client can at most double its rate across a window boundary.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable

from . import store
from .db import DbSession
from .errors import ServiceError
from .settings import Settings

__all__ = ["RateLimiter", "rate_limited"]

_IPV6_PREFIX = 64


class RateLimiter:
    """Count requests in the database and raise ``rate_limited`` (429) over a limit."""

    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        self.window = settings.rate_limit_window
        self.per_ip = settings.rate_limit_per_ip
        self.per_key = settings.rate_limit_per_key
        self.exempt = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.rate_limit_exempt
        )
        self.clock = clock

    def ip_bucket(self, host: str | None) -> str | None:
        """The rate-limit bucket of a client address, or ``None`` when it is not limited."""
        if not self.per_ip:
            return None
        return self.address_bucket(host)

    def address_bucket(self, host: str | None) -> str | None:
        """The bucket of a client address, or ``None`` for an exempt (or unknown) one.

        An IPv6 client is counted by its /64, the block one subscriber usually holds, so that
        rotating through its own addresses does not multiply its allowance.
        """
        if not host:
            return None
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

    async def hit_ip(self, *, db: DbSession, host: str | None) -> int | None:
        bucket = self.ip_bucket(host)
        if bucket is None:
            return None
        return await self._hit(db, bucket, self.per_ip)

    async def hit_key(self, *, db: DbSession, key_id: int) -> int | None:
        if not self.per_key:
            return None
        return await self._hit(db, f"key:{key_id}", self.per_key)

    async def _hit(self, db: DbSession, bucket: str, limit: int) -> int | None:
        now = self.clock()
        start = int(now // self.window) * self.window
        hits, current = await store.count_hit(db=db, bucket=bucket, window_start=start)
        if hits <= limit:
            return None
        return max(1, math.ceil(current + self.window - now))


def rate_limited(seconds: int, *, field: str | None = None) -> ServiceError:
    """The 429 error, with ``Retry-After`` in whole seconds (RFC 9110, 10.2.3)."""
    return ServiceError(
        "rate_limited",
        f"Too many requests; try again in {seconds} second{'s' if seconds != 1 else ''}.",
        status=429,
        field=field,
        headers={"Retry-After": str(seconds)},
    )
