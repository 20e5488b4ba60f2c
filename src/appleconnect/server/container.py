"""The service container: what the routes and commands share, opened once per app by the
lifespan (``create_app``) or once per command, and closed with it.

It holds the settings in force (replaced, never edited, by :mod:`.live_settings`), the database
engine and its session factory, the gateway to Apple, the encryptor of stored secrets, the
outbound HTTP client, the rate limiter, the database's health (:mod:`.health`), and the
background tasks (housekeeping, the outbox's worker, forwarded sign-ins, delayed closing of a
replaced Apple gateway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from . import store
from .apple import AppleGateway
from .db import DbSession, create_engine, migrate, session_factory
from .health import DatabaseHealth, is_database_unavailable
from .outbox import OutboxWorker
from .ratelimit import RateLimiter
from .reads import Reads
from .security import Encryptor, load_encryptor
from .settings import Settings
from .writes import Writes

__all__ = [
    "CLOSE_GRACE",
    "HOUSEKEEPING_INTERVAL",
    "ServiceContainer",
    "close_container",
    "open_container",
]

log = logging.getLogger(__name__)


@dataclass
class ServiceContainer:
    """What the routes need, built once per app by the lifespan."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[DbSession]
    apple: AppleGateway
    encryptor: Encryptor
    outbound: httpx.AsyncClient
    limiter: RateLimiter
    reads: Reads
    writes: Writes
    health: DatabaseHealth = field(default_factory=DatabaseHealth)
    outbox: OutboxWorker | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    daemons: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coro: Any, *, daemon: bool = False) -> None:
        """Run ``coro`` in the background. At close, a task is given :data:`CLOSE_GRACE`
        seconds to finish (a forwarded sign-in), unless it is a ``daemon`` (a loop that never
        ends, a delayed close), which is cancelled at once."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        if daemon:
            self.daemons.add(task)
            task.add_done_callback(self.daemons.discard)


async def open_container(
    settings: Settings,
    *,
    apple_transport: httpx.AsyncBaseTransport | None = None,
    outbound_transport: httpx.AsyncBaseTransport | None = None,
    migrate_on_start: bool = True,
) -> ServiceContainer:
    """Open the database (migrating it), the key, and the clients; close with close_container."""
    engine = create_engine(settings)
    try:
        if migrate_on_start:
            await migrate(engine)
        sessions = session_factory(engine)
        encryptor = load_encryptor(settings)
        private_key = settings.private_key_pem()
        if not private_key and not settings.client_secret:
            async with sessions() as db:
                private_key = (
                    await store.load_setting(db=db, encryptor=encryptor, key="private_key") or ""
                )
        gateway = AppleGateway(settings, private_key_pem=private_key, transport=apple_transport)
    except BaseException:
        await engine.dispose()
        raise
    outbound = httpx.AsyncClient(transport=outbound_transport, timeout=10.0)
    service = ServiceContainer(
        settings=settings,
        engine=engine,
        sessions=sessions,
        apple=gateway,
        encryptor=encryptor,
        outbound=outbound,
        limiter=RateLimiter(settings, time.time),
        reads=Reads(engine, autocommit=not settings.database_pgbouncer),
        writes=Writes(engine),
    )
    service.health.watch(engine)
    async with sessions() as db:
        await store.purge_expired(db=db)
        await db.commit()
    service.spawn(_housekeeping(service), daemon=True)
    service.outbox = OutboxWorker(sessions, lambda: service.settings, service.health)
    service.spawn(service.outbox.run(), daemon=True)
    return service


HOUSEKEEPING_INTERVAL = 3600.0


async def _housekeeping(service: ServiceContainer) -> None:
    """Purge expired rows (sessions, sign-in requests, rate-limit counters) every hour."""
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL)
        try:
            async with service.sessions() as db:
                await store.purge_expired(db=db)
                await db.commit()
        except Exception as exc:  # a database hiccup must not end the loop
            if is_database_unavailable(exc):
                service.health.failed(exc)
            else:
                log.exception("housekeeping failed")


CLOSE_GRACE = 15.0
"""Seconds a background task that is not a daemon (a sign-in being forwarded, whose HTTP
client times out after 10 s) is given to finish when the service closes."""


async def close_container(service: ServiceContainer) -> None:
    """Close what :func:`open_container` opened, after the background work: tasks that are not
    daemons get :data:`CLOSE_GRACE` seconds to finish; the daemons are cancelled (the outbox's
    worker first lets the mail it is sending finish and be recorded, see :mod:`.outbox`)."""
    finishing = [t for t in service.background if t not in service.daemons]
    daemons = list(service.daemons)
    for task in daemons:
        task.cancel()
    if finishing:
        _done, late = await asyncio.wait(finishing, timeout=CLOSE_GRACE)
        for task in late:
            log.warning("a background task did not finish within %g s; cancelled", CLOSE_GRACE)
            task.cancel()
    await asyncio.gather(*finishing, *daemons, return_exceptions=True)
    await service.limiter.close(service.sessions)
    await service.outbound.aclose()
    await service.apple.aclose()
    await service.reads.dispose()
    service.writes.close()
    await service.engine.dispose()
