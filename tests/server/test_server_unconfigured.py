"""A production service started with only the database URL, the encryption key and the public
URL: sign-in answers ``not_configured`` until the admin panel provides the Apple settings, then
works (against the in-process emulator, as Apple)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.fernet import Fernet

from appleconnect.sandbox import Sandbox, _prepare, build_sandbox_app, production_banner
from appleconnect.server import SettingsError, create_app, store
from appleconnect.server.settings import Secret, Settings

PUBLIC = "https://login.example.com"
NOTHING_FROM_APPLE: dict[str, Any] = {
    "team_id": "",
    "key_id": "",
    "private_key": Secret(""),
    "client_id": "",
    "app_ids": (),
}


@dataclass
class Unconfigured:
    sandbox: Sandbox
    http: httpx.AsyncClient

    @property
    def emulator(self) -> Any:
        return self.sandbox.emulator_app.state.emulator

    @property
    def service(self) -> Any:
        return self.sandbox.service_app.state.container


@pytest.fixture
async def prod(tmp_path: Path, database_url: str) -> AsyncIterator[Unconfigured]:
    # The emulator is mounted beside the service only to play Apple once the panel points the
    # service at it; the service itself runs in production mode with no Apple settings.
    sandbox = build_sandbox_app(
        tmp_path / "data",
        public_url=PUBLIC,
        overrides={
            "mode": "production",
            "database_url": database_url,
            "encryption_key": Secret(Fernet.generate_key().decode()),
            **NOTHING_FROM_APPLE,
        },
    )
    assert sandbox.settings.apple_missing() == ("client_id", "team_id", "key_id", "private_key")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(sandbox.app.router.lifespan_context(sandbox.app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=sandbox.transport, base_url=PUBLIC)
        )
        yield Unconfigured(sandbox, http)


async def admin_csrf(prod: Unconfigured) -> str:
    async with prod.service.sessions() as db:
        token = await store.create_admin_login(db=db, ttl=60)
        await db.commit()
    signed_in = await prod.http.post("/admin/login", data={"token": token})
    assert signed_in.status_code == 303, signed_in.text
    overview = await prod.http.get("/admin")
    assert overview.status_code == 200
    assert "client_id, team_id, key_id, private_key are missing" in overview.text
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', overview.text)
    assert match
    return match.group(1)


async def test_sign_in_answers_not_configured_until_the_panel_sets_apple(
    prod: Unconfigured,
) -> None:
    for method, path in (
        ("GET", "/api/apple_request_auth"),
        ("POST", "/api/apple_connect"),
        ("GET", "/api/get_currentuserinfo"),
        ("POST", "/auth/apple/notifications"),
    ):
        refused = await prod.http.request(method, path)
        assert refused.status_code == 503, path
        body = refused.json()
        assert (body["status"], body["error"]) == ("error", "not_configured"), path
        assert "admin panel" in body["message"]
    page = await prod.http.get("/auth/apple/start")
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "not set up on this service yet" in page.text
    assert (await prod.http.get("/healthz")).status_code == 200

    csrf = await admin_csrf(prod)
    team = prod.emulator.default_team
    form = {
        "csrf": csrf,
        "redirect_uri": "",
        "client_id": team.services_id,
        "app_ids": team.app_id,
        "team_id": team.team_id,
        "key_id": team.key_id,
        "private_key": team.private_key_pem,
        "secret_mode": "auto",
    }
    # Production still refuses what only sandbox mode allows, naming the field.
    local = await prod.http.post(
        "/admin/apple", data={**form, "redirect_uri": "http://localhost/auth/apple/callback"}
    )
    assert local.status_code == 400
    assert 'id="redirect_uri-error"' in local.text
    assert "Apple would refuse this redirect URI: Apple requires HTTPS" in local.text
    # Apple settings must be saved complete.
    partial = await prod.http.post("/admin/apple", data={**form, "private_key": ""})
    assert partial.status_code == 400
    assert "private_key: set the .p8 key" in partial.text
    assert prod.service.apple.missing == ("client_id", "team_id", "key_id", "private_key")

    saved = await prod.http.post("/admin/apple", data=form)
    assert saved.status_code == 200, saved.text
    assert prod.service.apple.missing == ()
    assert prod.service.settings.effective_redirect_uri == PUBLIC + "/auth/apple/callback"

    start = await prod.http.get("/auth/apple/start", params={"next": "/account"})
    assert start.status_code == 303, start.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["location"]).query).items()}
    assert query["client_id"] == team.services_id
    consent = await prod.http.post(
        "/apple/emulator/authorize", json={**query, "account": "maria.ruiz@example.com"}
    )
    assert consent.status_code == 200, consent.text
    params = {k: v for k, v in consent.json()["params"].items() if v is not None}
    callback = await prod.http.post("/auth/apple/callback", data=params)
    assert callback.status_code == 303, callback.text
    finish = await prod.http.get(callback.headers["location"])
    assert finish.status_code == 303
    assert finish.headers["location"] == "/account"
    assert "secure" in finish.headers["set-cookie"].lower()
    cookie = finish.cookies["__Host-appleconnect_session"]  # production: __Host- prefix
    info = await prod.http.get("/api/get_currentuserinfo", params={"cookie": cookie})
    assert info.status_code == 200, info.text
    assert info.json()["user"]["email"] == "maria.ruiz@example.com"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"encryption_key": Secret("")}, "encryption_key"),
        ({"public_url": "http://login.example.com"}, "public_url"),
        ({"redirect_uri": "https://localhost/auth/apple/callback"}, "redirect_uri"),
    ],
)
def test_production_without_apple_still_refuses_sandbox_relaxations(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    settings = Settings(
        mode="production",
        data_dir=tmp_path,
        public_url=PUBLIC,
        encryption_key=Secret(Fernet.generate_key().decode()),
    )
    create_app(settings)  # no Apple settings at all: starts
    with pytest.raises(SettingsError) as caught:
        create_app(settings.replace(**changes))
    assert str(caught.value).startswith(field + ":")


def test_serve_prints_the_admin_login_link_and_what_is_missing(tmp_path: Path) -> None:
    settings = Settings(
        mode="production",
        data_dir=tmp_path,
        public_url=PUBLIC,
        encryption_key=Secret(Fernet.generate_key().decode()),
    )
    text = "\n".join(production_banner(settings, _prepare(settings)))
    assert f"admin login      {PUBLIC}/admin/login?token=" in text
    assert "missing Apple settings: client_id, team_id, key_id, private_key" in text
    assert f"{PUBLIC}/admin/apple" in text
