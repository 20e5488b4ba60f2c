"""``GET /readyz``: 200 when the database answers at the current schema, the Apple settings are
complete and (in sandbox mode) the emulator answers; otherwise 503 naming what is not ready.
The database going away is tested on a real PostgreSQL cluster in test_server_db_outage.py."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from server_helpers import Env, free_port
from sqlalchemy import text

from appleconnect.server.app import create_app
from appleconnect.server.readiness import schema_head
from appleconnect.server.settings import Secret, Settings


async def test_ready_when_everything_answers(env: Env) -> None:
    response = await env.http.get("/readyz")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json() == {
        "status": "ready",
        "not_ready": [],
        "checks": {"database": "ok", "schema": "ok", "apple_settings": "ok", "emulator": "ok"},
    }


async def test_readiness_checks_leave_no_log_lines(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A load balancer asks every few seconds: Alembic's "Context impl" lines stay out."""
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert (await env.http.get("/readyz")).status_code == 200
    alembic = [r.getMessage() for r in caplog.records if r.name.startswith("alembic")]
    assert alembic == []


async def test_not_ready_when_the_schema_is_behind(env: Env) -> None:
    async def set_version(version: str | None) -> None:
        async with env.service.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": version})

    await set_version("0001")
    try:
        response = await env.http.get("/readyz")
    finally:
        await set_version(schema_head())  # the PostgreSQL database outlives the test
    assert response.status_code == 503
    body = response.json()
    assert body["not_ready"] == ["schema"]
    head = schema_head()
    assert body["checks"]["schema"] == f"not current: at migration 0001, this version needs {head}"
    assert body["checks"]["database"] == "ok"
    assert (await env.http.get("/readyz")).status_code == 200


async def test_not_ready_without_apple_settings_nor_emulator(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    settings = Settings(mode="sandbox", data_dir=tmp_path, apple_base_url=closed)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        response = await http.get("/readyz")
        healthz = await http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["not_ready"] == ["apple_settings", "emulator"]
    assert body["checks"]["apple_settings"] == "missing: client_id, team_id, key_id, private_key"
    assert body["checks"]["emulator"] == f"unavailable: ConnectError from GET {closed}/auth/keys"
    assert body["checks"]["database"] == "ok"
    assert healthz.json() == {"status": "ok"}


async def test_production_has_no_emulator_check(tmp_path: Path) -> None:
    settings = Settings(
        mode="production",
        data_dir=tmp_path,
        public_url="https://login.example.com",
        client_id="com.example.web",
        client_secret=Secret("made-by-hand"),
        encryption_key=Secret(Fernet.generate_key().decode()),
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "schema", "apple_settings"}
