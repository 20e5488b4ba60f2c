"""What an unauthenticated client can make the service store through ``GET /auth/apple/start``:
at most ``signin_budget_per_ip`` live sign-in requests per address (an IPv6 client: its /64),
each purged when it expires; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from test_server_ratelimit import BASE, limited_settings

from appleconnect.server import create_app, load_settings, store
from appleconnect.server.models import AuthRequest, utcnow
from appleconnect.server.settings import SettingsError

BUDGET = 4
LONG_NEXT = "/" + "n" * 511  # the longest next accepted


@pytest.fixture
async def app(tmp_path: Path, database_url: str) -> AsyncIterator[FastAPI]:
    settings = limited_settings(tmp_path, database_url, signin_budget_per_ip=BUDGET)
    service_app = create_app(settings)
    async with service_app.router.lifespan_context(service_app):
        yield service_app


@pytest.fixture
async def clients(app: FastAPI) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A browser per client address."""
    async with AsyncExitStack() as stack:
        found = {}
        for ip in ("198.51.100.7", "198.51.100.8", "2001:db8:1:2::1", "2001:db8:1:2::99"):
            transport = httpx.ASGITransport(app=app, client=(ip, 50_000))
            found[ip] = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url=BASE)
            )
        yield found


async def rows(app: FastAPI) -> int:
    async with app.state.container.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(AuthRequest)) or 0)


async def expire_all(app: FastAPI) -> None:
    """Move every sign-in request's expiry one second into the past (time passing)."""
    async with app.state.container.sessions() as db:
        await db.execute(update(AuthRequest).values(expires_at=utcnow() - timedelta(seconds=1)))
        await db.commit()


def assert_refused_over_budget(response: httpx.Response, ttl: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Too many sign-ins were started from your network" in response.text
    assert ttl - 5 <= int(response.headers["retry-after"]) <= ttl


async def test_starts_at_once_from_one_address_store_no_more_than_its_budget(
    app: FastAPI, clients: dict[str, httpx.AsyncClient]
) -> None:
    """Counted and stored one at a time per address, even by concurrent transactions (on
    PostgreSQL each would otherwise count the rows committed before it, none of the others)."""
    ttl = app.state.container.settings.auth_request_ttl
    first = clients["198.51.100.7"]
    answers = await asyncio.gather(*(first.get("/auth/apple/start") for _ in range(12)))
    assert sorted(a.status_code for a in answers) == [303] * BUDGET + [429] * (12 - BUDGET)
    for refused in (a for a in answers if a.status_code == 429):
        assert_refused_over_budget(refused, ttl)
    assert await rows(app) == BUDGET


async def test_one_address_stores_at_most_its_budget(
    app: FastAPI, clients: dict[str, httpx.AsyncClient]
) -> None:
    ttl = app.state.container.settings.auth_request_ttl
    first = clients["198.51.100.7"]
    answers = [await first.get("/auth/apple/start", params={"next": LONG_NEXT}) for _ in range(10)]
    assert [a.status_code for a in answers[:BUDGET]] == [303] * BUDGET
    for refused in answers[BUDGET:]:
        assert_refused_over_budget(refused, ttl)
    assert await rows(app) == BUDGET
    # Another address has a budget of its own.
    other = await clients["198.51.100.8"].get("/auth/apple/start")
    assert other.status_code == 303
    assert await rows(app) == BUDGET + 1


async def test_an_ipv6_client_is_counted_by_its_slash_64(
    app: FastAPI, clients: dict[str, httpx.AsyncClient]
) -> None:
    ttl = app.state.container.settings.auth_request_ttl
    for _ in range(BUDGET):
        assert (await clients["2001:db8:1:2::1"].get("/auth/apple/start")).status_code == 303
    neighbour = await clients["2001:db8:1:2::99"].get("/auth/apple/start")
    assert_refused_over_budget(neighbour, ttl)
    assert await rows(app) == BUDGET


async def test_housekeeping_deletes_sign_in_requests_as_soon_as_they_expire(
    app: FastAPI, clients: dict[str, httpx.AsyncClient]
) -> None:
    for _ in range(2):
        assert (await clients["198.51.100.7"].get("/auth/apple/start")).status_code == 303
    await expire_all(app)
    async with app.state.container.sessions() as db:
        await store.purge_expired(db=db)  # what the hourly housekeeping runs
        await db.commit()
    assert await rows(app) == 0


async def test_every_start_purges_the_expired_and_the_budget_comes_back(
    app: FastAPI, clients: dict[str, httpx.AsyncClient]
) -> None:
    first = clients["198.51.100.7"]
    for _ in range(BUDGET):
        assert (await first.get("/auth/apple/start")).status_code == 303
    assert_refused_over_budget(await first.get("/auth/apple/start"), 600)
    await expire_all(app)
    again = await first.get("/auth/apple/start")
    assert again.status_code == 303
    assert await rows(app) == 1


async def test_next_is_bounded(clients: dict[str, httpx.AsyncClient]) -> None:
    first = clients["198.51.100.7"]
    assert (await first.get("/auth/apple/start", params={"next": LONG_NEXT})).status_code == 303
    too_long = await first.get("/auth/apple/start", params={"next": LONG_NEXT + "n"})
    assert too_long.status_code == 400
    assert "must be a path on this site" in too_long.text


async def test_exempt_networks_have_no_budget(tmp_path: Path, database_url: str) -> None:
    settings = limited_settings(
        tmp_path,
        database_url,
        signin_budget_per_ip=1,
        rate_limit_exempt=("198.51.100.0/24",),
    )
    service_app = create_app(settings)
    async with service_app.router.lifespan_context(service_app):
        transport = httpx.ASGITransport(app=service_app, client=("198.51.100.7", 50_000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as backend:
            for _ in range(3):
                assert (await backend.get("/auth/apple/start")).status_code == 303
        assert await rows(service_app) == 3


def test_the_budget_setting_is_read_and_checked() -> None:
    settings = load_settings(
        environ={"APPLECONNECT_MODE": "sandbox", "APPLECONNECT_SIGNIN_BUDGET_PER_IP": "12"}
    )
    assert settings.signin_budget_per_ip == 12
    with pytest.raises(SettingsError) as caught:
        settings.replace(signin_budget_per_ip=-1).validate(apple=False)
    assert str(caught.value).startswith("signin_budget_per_ip: must be 0 (no limit) or a positive")
