"""Rate limits per client IP and per API key: counted in the database, so two app instances
on one database (SQLite and PostgreSQL) share them; 429 ``rate_limited`` with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from appleconnect.server import Settings, create_app, load_settings, store
from appleconnect.server.settings import Secret, SettingsError

BASE = "http://127.0.0.1:8000"
WINDOW = 60
T0 = 1_800_000_000.0  # a window start (divisible by 60)


class Instances:
    """Two service apps on one database, each with its own clients by client IP."""

    def __init__(self, apps: list[FastAPI], stack: AsyncExitStack, key: str) -> None:
        self.apps = apps
        self.stack = stack
        self.key = key
        self.now = T0 + 10

    def set_clock(self, now: float) -> None:
        self.now = now

    async def client(self, instance: int, ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.apps[instance], client=(ip, 50_000))
        return await self.stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url=BASE)
        )


def limited_settings(tmp_path: Path, database_url: str, **limits: object) -> Settings:
    return load_settings(
        data_dir=tmp_path,
        environ={},
        overrides={
            "mode": "sandbox",
            "database_url": database_url,
            "client_id": "com.example.web",
            "app_ids": ("com.example.app",),
            "client_secret": Secret("a-client-secret-made-by-hand"),
            # Nothing here calls Apple; a non-Apple base URL allows the plain-http callback.
            "apple_base_url": "http://127.0.0.1:9/apple",
            "rate_limit_window": WINDOW,
            # Every request written: exact across instances (the batched default is tested
            # in test_server_ratelimit_sync.py).
            "rate_limit_sync": 0,
            **limits,
        },
    )


@asynccontextmanager
async def two_instances(settings: Settings) -> AsyncIterator[Instances]:
    """Two apps of ``settings`` on one database, an API key, and one clock for both limiters."""
    async with AsyncExitStack() as stack:
        apps = [create_app(settings), create_app(settings)]
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
        service = apps[0].state.container
        async with service.sessions() as db:
            key = await store.create_api_key(db=db, name="tests")
            await db.commit()
        found = Instances(apps, stack, key)
        for app in apps:
            app.state.container.limiter.clock = lambda: found.now
        yield found


@pytest.fixture
async def instances(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str
) -> AsyncIterator[Instances]:
    limits = getattr(request, "param", {"rate_limit_per_ip": 5, "rate_limit_per_key": 3})
    async with two_instances(limited_settings(tmp_path, database_url, **limits)) as found:
        yield found


def assert_limited(response: httpx.Response, retry_after: int, field: str | None) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    expected = {
        "status": "error",
        "error": "rate_limited",
        "message": f"Too many requests; try again in {retry_after} seconds.",
    }
    if field is not None:
        expected["field"] = field
    assert body == expected
    assert response.headers["retry-after"] == str(retry_after)


async def request_auth(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.get("/api/apple_request_auth", params={"key": key})


async def test_the_key_limit_is_shared_by_two_instances(instances: Instances) -> None:
    a = await instances.client(0, "198.51.100.1")
    b = await instances.client(1, "198.51.100.2")  # other IPs: only the key limit applies
    c = await instances.client(0, "198.51.100.3")
    for client in (a, b, c):
        assert (await request_auth(client, instances.key)).status_code == 200
    instances.set_clock(T0 + 15.5)
    assert_limited(await request_auth(b, instances.key), 45, "key")
    assert_limited(await request_auth(a, instances.key), 45, "key")
    # A cookie endpoint has no key: the key's limit does not apply to it.
    missing = await b.get("/api/validate_auth_cookie")
    assert (missing.status_code, missing.json()["error"]) == (401, "missing_parameter")
    # The next window starts afresh, on both instances.
    instances.set_clock(T0 + WINDOW)
    assert (await request_auth(b, instances.key)).status_code == 200
    assert (await request_auth(a, instances.key)).status_code == 200


async def test_the_ip_limit_is_shared_and_counts_wrong_keys(instances: Instances) -> None:
    one = [await instances.client(i, "203.0.113.9") for i in (0, 1)]
    other = await instances.client(1, "203.0.113.10")
    wrong = [
        await one[i % 2].post("/api/apple_connect", data={"key": "ack_guess"}) for i in range(5)
    ]
    assert [(r.status_code, r.json()["error"]) for r in wrong] == [(401, "invalid_key")] * 5
    # Over the IP limit even with the right key, on either instance, for every limited path.
    assert_limited(await request_auth(one[1], instances.key), 50, None)
    assert_limited(await one[0].get("/api/get_currentuserinfo", params={"cookie": "x"}), 50, None)
    assert_limited(await one[1].post("/api/apple_connect/", data={"code": "c"}), 50, None)
    # Another address is not affected, and its request with the key counts against the key.
    assert (await request_auth(other, instances.key)).status_code == 200


async def test_web_sign_in_start_and_callback_are_limited_per_ip(instances: Instances) -> None:
    browser = await instances.client(0, "2001:db8:1:2::10")
    neighbour = await instances.client(1, "2001:db8:1:2::99")  # the same /64
    for _ in range(4):
        assert (await browser.get("/auth/apple/start")).status_code == 303
    assert (await neighbour.post("/auth/apple/callback", data={"state": "s"})).status_code == 400
    page = await browser.get("/auth/apple/start")
    assert page.status_code == 429
    assert page.headers["retry-after"] == "50"
    assert page.headers["content-type"].startswith("text/html")
    assert "Too many requests; try again in 50 seconds." in page.text
    as_json = await neighbour.post(
        "/auth/apple/callback", data={"state": "s"}, headers={"accept": "application/json"}
    )
    assert_limited(as_json, 50, None)
    elsewhere = await instances.client(0, "2001:db8:1:3::10")
    assert (await elsewhere.get("/auth/apple/start")).status_code == 303


@pytest.mark.parametrize(
    "instances",
    [{"rate_limit_per_ip": 0, "rate_limit_per_key": 0}],
    indirect=True,
)
async def test_zero_turns_the_limits_off(instances: Instances) -> None:
    client = await instances.client(0, "192.0.2.1")
    for _ in range(8):
        assert (await request_auth(client, instances.key)).status_code == 200


@pytest.mark.parametrize(
    "instances",
    [{"rate_limit_per_ip": 1, "rate_limit_exempt": ("10.0.0.0/8",)}],
    indirect=True,
)
async def test_exempt_networks_are_not_limited_per_ip(instances: Instances) -> None:
    backend = await instances.client(0, "10.1.2.3")
    for _ in range(3):
        assert (
            await backend.get("/api/validate_auth_cookie", params={"cookie": "x"})
        ).status_code == 401
    visitor = await instances.client(0, "192.0.2.7")
    assert (await visitor.get("/auth/apple/start")).status_code == 303
    assert (await visitor.get("/auth/apple/start")).status_code == 429


def test_limit_settings_are_validated(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        environ={
            "APPLECONNECT_MODE": "sandbox",
            "APPLECONNECT_RATE_LIMIT_PER_IP": "10",
            "APPLECONNECT_RATE_LIMIT_EXEMPT": "10.0.0.0/8, 2001:db8::/32",
        },
    )
    assert settings.rate_limit_per_ip == 10
    assert settings.rate_limit_exempt == ("10.0.0.0/8", "2001:db8::/32")
    for name, value, message in (
        ("rate_limit_window", 0, "rate_limit_window: must be 1 to 86400 seconds."),
        ("rate_limit_per_key", -1, "rate_limit_per_key: must be 0 (no limit) or a positive"),
        ("rate_limit_exempt", ("10.0.0.300",), "rate_limit_exempt: '10.0.0.300' is not an IP"),
    ):
        with pytest.raises(SettingsError) as caught:
            settings.replace(**{name: value}).validate(apple=False)
        assert str(caught.value).startswith(message)
