"""A real ``appleconnect serve`` process on a throwaway PostgreSQL cluster that the test restarts
and stops under a steady load of session checks: 503 ``database_unavailable`` with
``Retry-After`` (JSON for the API, a page for browsers) instead of 500s, every keep-alive
connection kept, ``/healthz`` answering throughout, recovery as soon as the database is back,
and one log line per change of the database's state."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pg_cluster import ThrowawayCluster, find_bindir
from server_helpers import free_port, seed_user, wait_for
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from appleconnect.server import store
from appleconnect.server.app import create_app
from appleconnect.server.db import session_factory
from appleconnect.server.settings import Secret, Settings

pytestmark = pytest.mark.slow

CLIENTS = 8
RECOVERY = 2.0  # seconds after the database accepts connections


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("initdb/pg_ctl not found (the PostgreSQL server package must be installed)")
        pytest.skip("initdb/pg_ctl not found")
    owned = ThrowawayCluster(bindir)
    try:
        owned.start()
        owned.createdb("appleconnect")
        yield owned
    finally:
        owned.destroy()


@dataclass
class Service:
    url: str
    log: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def service(tmp_path: Path, cluster: ThrowawayCluster) -> Iterator[Service]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "APPLECONNECT_MODE": "sandbox",
        "APPLECONNECT_PUBLIC_URL": url,
        "APPLECONNECT_DATABASE_URL": cluster.url("appleconnect"),
        "APPLECONNECT_CLIENT_ID": "com.example.web",
        "APPLECONNECT_CLIENT_SECRET": "made-by-hand",
        "APPLECONNECT_RATE_LIMIT_PER_IP": "0",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "appleconnect.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(url + "/healthz", process, timeout=90.0)  # a start on a busy machine
        yield Service(url=url, log=log, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()


async def session_cookie(database_url: str) -> str:
    engine = create_async_engine(database_url)
    try:
        async with session_factory(engine)() as db:
            user = await seed_user(db, "001234.outage", "maria.ruiz@example.com", "Maria")
            cookie = await store.create_session(db=db, user_id=user.id, ttl=3600)
            await db.commit()
        return cookie
    finally:
        await engine.dispose()


@dataclass
class Answer:
    started: float
    kind: str  # "api", "page" or "health"
    status: int
    body: bytes
    headers: httpx.Headers
    client: tuple[str, int]


class Load:
    """CLIENTS keep-alive clients checking the session (API and page) and one on /healthz."""

    def __init__(self, url: str, cookie: str) -> None:
        self.url, self.cookie = url, cookie
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self.running = True

    async def _client(self, n: int) -> None:
        kind = "health" if n == CLIENTS else ("api" if n % 2 else "page")
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=10) as http:
            while self.running:
                started = time.monotonic()
                try:
                    if kind == "health":
                        response = await http.get("/healthz")
                    elif kind == "api":
                        response = await http.get(
                            "/api/get_currentuserinfo", params={"cookie": self.cookie}
                        )
                    else:
                        response = await http.get(
                            "/",
                            headers={
                                "accept": "text/html",
                                "cookie": f"appleconnect_session={self.cookie}",
                            },
                        )
                except httpx.HTTPError as exc:
                    self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                stream = response.extensions["network_stream"]
                self.answers.append(
                    Answer(
                        started,
                        kind,
                        response.status_code,
                        response.content,
                        response.headers,
                        stream.get_extra_info("client_addr"),
                    )
                )
                await asyncio.sleep(0.005)

    async def run_while(self, scenario: asyncio.Future[None]) -> None:
        clients = [asyncio.create_task(self._client(n)) for n in range(CLIENTS + 1)]
        try:
            await scenario
        finally:
            self.running = False
            await asyncio.gather(*clients)


def check_answers(answers: list[Answer], calm: list[tuple[float, float]]) -> None:
    """``calm``: (when the database accepted connections again, when the next fault began)."""
    statuses = {(a.kind, a.status) for a in answers}
    assert ("api", 503) in statuses, statuses
    assert ("page", 503) in statuses, statuses
    for a in answers:
        if a.kind == "health":
            assert a.status == 200, a.body
            continue
        if a.status == 200:
            continue
        assert a.status == 503, (a.kind, a.status, a.body[:300])
        assert a.headers["retry-after"] == "5"
        if a.kind == "api":
            assert a.headers["content-type"] == "application/json"
            assert httpx.Response(200, content=a.body).json() == {
                "status": "error",
                "error": "database_unavailable",
                "message": "The service's database cannot be reached right now; "
                "try again in a few seconds.",
            }
        else:
            assert a.headers["content-type"].startswith("text/html")
            assert b"database cannot be reached" in a.body
    for ready, until in calm:
        # Recovery: every check started RECOVERY seconds after the database was back worked
        # (up to half a second before the next fault, which may catch a check in flight).
        late = [
            a for a in answers if a.kind != "health" and ready + RECOVERY <= a.started < until - 0.5
        ]
        assert late
        failed = [(round(a.started - ready, 2), a.kind, a.status) for a in late if a.status != 200]
        assert failed == []
        first_ok = min(a.started for a in answers if a.status == 200 and a.started >= ready)
        assert first_ok - ready < RECOVERY


async def test_database_restart_and_outage_under_load(
    service: Service, cluster: ThrowawayCluster
) -> None:
    cookie = await session_cookie(cluster.url("appleconnect"))
    load = Load(service.url, cookie)
    calm: list[tuple[float, float]] = []

    async def scenario() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.restart)  # returns once it accepts connections
        ready = time.monotonic()
        await asyncio.sleep(RECOVERY + 1.0)
        calm.append((ready, time.monotonic()))
        await asyncio.to_thread(cluster.stop)
        await asyncio.sleep(3.0)
        await asyncio.to_thread(cluster.start)
        ready = time.monotonic()
        await asyncio.sleep(RECOVERY + 1.0)
        calm.append((ready, time.monotonic()))

    await load.run_while(asyncio.ensure_future(scenario()))

    assert load.errors == []
    check_answers(load.answers, calm)
    # Every client kept its one keep-alive connection through both outages.
    for kind in ("api", "page", "health"):
        per_client = {a.client for a in load.answers if a.kind == kind}
        assert len(per_client) == (1 if kind == "health" else CLIENTS // 2), (kind, per_client)
    log = service.log.read_text()
    assert "Traceback" not in log
    down = log.count("database unavailable (")
    up = log.count("database available again after")
    assert 2 <= down <= 4, log[-3000:]
    assert up == down
    assert service.process.poll() is None


async def test_healthz_and_the_settings_refresh_while_the_database_is_stopped(
    tmp_path: Path, cluster: ThrowawayCluster, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        mode="sandbox",
        data_dir=tmp_path,
        database_url=cluster.url("appleconnect"),
        client_id="com.example.web",
        client_secret=Secret("made-by-hand"),
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http,
    ):
        container = app.state.container
        live = app.state.live_settings
        attempts: list[int] = []
        event.listen(container.engine.sync_engine, "do_connect", lambda *a: attempts.append(1))
        in_force = container.settings
        await asyncio.to_thread(cluster.stop)
        try:
            for _ in range(20):
                assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert attempts == []  # liveness never touched the database
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["not_ready"] == ["database", "schema"]
            assert ready.json()["checks"]["database"].startswith("unavailable: ")
            attempts.clear()
            live.checked_at = float("-inf")  # the interval has passed
            for _ in range(5):
                await live.refresh(container)  # the first one tries; the interval holds the rest
            assert len(attempts) == 1
            assert container.settings is in_force
            assert not container.health.available
            page = await http.get(
                "/", headers={"accept": "text/html", "cookie": "appleconnect_session=acs_x"}
            )
            assert page.status_code == 503
            assert page.headers["retry-after"] == "5"
            assert len(attempts) == 2  # the page's own query, not a new settings check
        finally:
            await asyncio.to_thread(cluster.start)
        live.checked_at = float("-inf")
        await live.refresh(container)
        assert container.health.available
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.json()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("database unavailable (")]) == 1
    assert len([m for m in messages if m.startswith("database available again after")]) == 1
