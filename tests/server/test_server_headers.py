"""Security headers on every response, per page type: ``Cache-Control: no-store`` on anything
that carries a token, a session cookie or user data; ``nosniff``, ``Referrer-Policy`` and a
Content-Security-Policy with ``frame-ancestors`` on pages and JSON; HSTS and ``__Host-``
cookies in production."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from server_helpers import Env

from appleconnect.sandbox import build_sandbox_app
from appleconnect.server import store
from appleconnect.server.headers import HSTS, PAGE_POLICY
from appleconnect.server.settings import Secret

MARIA = "maria.ruiz@example.com"


def assert_private(response: httpx.Response, *, policy: str | None = PAGE_POLICY) -> None:
    """The headers of an answer that must not be cached, sniffed, framed or leak its URL."""
    headers = response.headers
    assert headers["cache-control"] == "no-store", response.url
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] in ("same-origin", "no-referrer")
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    if policy is not None:
        assert csp == policy
    assert "strict-transport-security" not in headers  # sandbox mode is plain HTTP


async def test_web_flow_pages_and_redirects(env: Env) -> None:
    start = await env.http.get("/auth/apple/start", params={"next": "/"})
    assert start.status_code == 303
    assert start.headers["cache-control"] == "no-store"
    assert start.headers["referrer-policy"] == "same-origin"
    form = await env.consent(start.headers["location"], account=MARIA)
    callback = await env.http.post("/auth/apple/callback", data=form)
    assert callback.status_code == 303
    assert callback.headers["cache-control"] == "no-store"
    finish = await env.http.get(callback.headers["location"])
    assert finish.status_code == 303
    assert env.settings.session_cookie in finish.headers["set-cookie"]
    assert finish.headers["cache-control"] == "no-store"
    assert finish.headers["x-content-type-options"] == "nosniff"
    demo = await env.http.get("/")  # signed in, with "Delete my account"
    assert "Delete my account" in demo.text
    assert_private(demo)


async def test_the_callback_hand_off_page(env: Env) -> None:
    started = await env.http.get("/api/apple_request_auth", headers={"X-API-Key": env.api_key})
    assert_private(started)
    form = await env.consent(started.json()["url"], account=MARIA)
    page = await env.http.post("/auth/apple/callback", data=form)
    assert page.status_code == 200, page.text
    assert 'id="apple-authorization"' in page.text
    assert_private(page)


async def test_api_answers_with_tokens_and_errors(env: Env) -> None:
    native = await env.native_code(account=MARIA)
    connect = await env.http.post(
        "/api/apple_connect",
        data={"code": native["code"], "id_token": native["id_token"]},
        headers={"X-API-Key": env.api_key},
    )
    assert connect.status_code == 200, connect.text
    assert_private(connect)
    info = await env.http.get(
        "/api/get_currentuserinfo",
        headers={"Authorization": f"Bearer {connect.json()['cookie']}"},
    )
    assert info.status_code == 200
    assert_private(info)
    error = await env.http.get("/api/get_currentuserinfo")
    assert error.status_code == 401
    assert_private(error)
    missing = await env.http.get("/nothing-here", headers={"accept": "text/html"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert_private(missing)
    schema = await env.http.get("/openapi.json")
    assert_private(schema)


async def test_pages_with_their_own_policy_keep_it(env: Env) -> None:
    async with env.service.sessions() as db:
        token = await store.create_admin_login(db=db, ttl=60)
        await db.commit()
    login = await env.http.get("/admin/login", params={"token": token})
    assert_private(login, policy=None)
    assert "script-src 'nonce-" in login.headers["content-security-policy"]
    assert login.headers["content-security-policy"].count("frame-ancestors") == 1
    refused = await env.http.get("/embed/popup", params={"origin": "https://elsewhere.example"})
    assert refused.status_code == 403
    assert_private(refused)


async def test_static_assets_keep_public_caching_and_get_nosniff(env: Env) -> None:
    for path in ("/buttons/apple?height=44&width=240", "/embed.js"):
        response = await env.http.get(path)
        assert response.status_code == 200, path
        assert response.headers["cache-control"].startswith("public, max-age="), path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in response.headers


@pytest.fixture
async def production(tmp_path: Path) -> AsyncIterator[Env]:
    public = "https://login.example.com"
    sandbox = build_sandbox_app(
        tmp_path / "data",
        public_url=public,
        overrides={
            "mode": "production",
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
            "encryption_key": Secret(Fernet.generate_key().decode()),
        },
    )
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(sandbox.app.router.lifespan_context(sandbox.app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=sandbox.transport, base_url=public)
        )
        yield Env(sandbox=sandbox, http=http, api_key="")


async def test_production_sends_hsts_and_host_prefixed_cookies(production: Env) -> None:
    finish = await production.web_sign_in(account=MARIA)
    # The finish also deletes the sign-in's own (__Host-) cookie; check the session's.
    cookies = finish.headers.get_list("set-cookie")
    assert all(c.startswith("__Host-") for c in cookies)
    cookie = next(c for c in cookies if c.startswith("__Host-appleconnect_session="))
    assert cookie.startswith("__Host-appleconnect_session=acs_")
    assert "; Path=/;" in cookie or cookie.endswith("; Path=/")
    assert "secure" in cookie.lower()
    assert "domain" not in cookie.lower()
    assert finish.headers["strict-transport-security"] == HSTS
    demo = await production.http.get("/")
    assert demo.headers["strict-transport-security"] == HSTS
    assert "Delete my account" in demo.text

    async with production.service.sessions() as db:
        token = await store.create_admin_login(db=db, ttl=60)
        await db.commit()
    admin = await production.http.post(
        "/admin/login", data={"token": token}, headers={"origin": "https://login.example.com"}
    )
    assert admin.status_code == 303, admin.text
    admin_cookie = admin.headers["set-cookie"]
    assert admin_cookie.startswith("__Host-appleconnect_admin=")
    assert "Path=/;" in admin_cookie
    assert "secure" in admin_cookie.lower()
    assert "domain" not in admin_cookie.lower()
    panel = await production.http.get("/admin")
    assert panel.status_code == 200  # the panel reads the prefixed cookie
    assert panel.headers["strict-transport-security"] == HSTS


async def test_an_unexpected_error_page_has_the_headers_too(env: Env) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    env.sandbox.service_app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=env.sandbox.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        response = await http.get("/boom", headers={"accept": "text/html"})
    assert response.status_code == 500
    assert "Something went wrong on our side." in response.text
    assert_private(response)
