"""Login CSRF and session fixation (RFC 6749 section 10.12, RFC 9700 section 4.7): a web sign-in
finishes only in the browser that started it. Two browsers are two independent cookie jars
(httpx clients) on the same service, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from server_helpers import PUBLIC_URL, Env
from sqlalchemy import func, select

from appleconnect.server.binding import MAX_PARALLEL, SIGNIN_COOKIE
from appleconnect.server.models import AuthRequest, Session
from appleconnect.server.routes.web import HANDOFF_MAX_AGE

ATTACKER = "li.wei@example.com"
VICTIM = "maria.ruiz@example.com"


@pytest.fixture
async def other_browser(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser: the same service, a cookie jar of its own."""
    async with httpx.AsyncClient(transport=env.sandbox.transport, base_url=PUBLIC_URL) as client:
        yield client


async def count(env: Env, table: type) -> int:
    async with env.service.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(table)) or 0)


def assert_refused_here(response: httpx.Response, env: Env) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "started in another browser" in response.text
    assert env.settings.cookie_name not in response.headers.get("set-cookie", "")


async def test_a_form_post_replayed_in_the_victims_browser_signs_nobody_in(
    env: Env, other_browser: httpx.AsyncClient
) -> None:
    """The attacker starts a sign-in, consents with their own Apple ID, and makes the victim's
    browser submit Apple's form_post: the finish step refuses, no session is made."""
    attacker, victim = env.http, other_browser
    start = await attacker.get("/auth/apple/start", params={"next": "/account"})
    form = await env.consent(start.headers["location"], account=ATTACKER)

    callback = await victim.post("/auth/apple/callback", data=form)
    assert callback.status_code == 303
    assert callback.headers["location"].startswith("/auth/apple/finish?handoff=")
    finish = await victim.get(callback.headers["location"])

    assert_refused_here(finish, env)
    assert not any(name == env.settings.cookie_name for name in victim.cookies)
    assert await count(env, Session) == 0


async def test_the_finishing_link_is_worthless_in_another_browser(
    env: Env, other_browser: httpx.AsyncClient
) -> None:
    """A finishing link sent to another browser is refused there, and that refusal does not
    spend it: the browser that started the sign-in still finishes, once."""
    start = await env.http.get("/auth/apple/start", params={"next": "/account"})
    form = await env.consent(start.headers["location"], account=VICTIM)
    callback = await env.http.post("/auth/apple/callback", data=form)
    link = callback.headers["location"]

    elsewhere = await other_browser.get(link)
    assert_refused_here(elsewhere, env)
    # A forged sign-in cookie of the right name but a wrong secret does not help either.
    for name in env.http.cookies:
        if name.startswith(SIGNIN_COOKIE):
            other_browser.cookies.set(name, "forged-" + "x" * 40)
    assert_refused_here(await other_browser.get(link), env)
    assert await count(env, Session) == 0

    home = await env.http.get(link)
    assert home.status_code == 303
    assert home.headers["location"] == "/account"
    assert env.settings.cookie_name in home.cookies
    assert await count(env, Session) == 1
    assert not [n for n in env.http.cookies if n.startswith(SIGNIN_COOKIE)]  # cookie deleted
    again = await env.http.get(link)
    assert again.status_code == 400
    assert "already used or has expired" in again.text
    assert await count(env, AuthRequest) == 0  # a finished sign-in leaves no row


async def test_the_sign_in_cookie_is_httponly_lax_and_short_lived(env: Env) -> None:
    start = await env.http.get("/auth/apple/start")
    cookie = start.headers["set-cookie"]
    name = cookie.split("=", 1)[0]
    assert name.startswith(SIGNIN_COOKIE)  # sandbox: no __Host- (plain HTTP)
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert f"max-age={env.settings.auth_request_ttl + HANDOFF_MAX_AGE}" in attributes


async def test_sign_ins_started_in_several_tabs_all_finish(env: Env) -> None:
    starts = [await env.http.get("/auth/apple/start", params={"next": f"/t{i}"}) for i in (1, 2)]
    forms = [await env.consent(s.headers["location"], account=VICTIM) for s in starts]
    for i, form in zip((1, 2), reversed(forms), strict=True):
        callback = await env.http.post("/auth/apple/callback", data=form)
        finish = await env.http.get(callback.headers["location"])
        assert finish.status_code == 303, finish.text
        assert finish.headers["location"] == f"/t{3 - i}"


async def test_a_browser_keeps_only_its_newest_sign_in_cookies(env: Env) -> None:
    for _ in range(MAX_PARALLEL + 3):
        start = await env.http.get("/auth/apple/start")
        assert start.status_code == 303
    names = [n for n in env.http.cookies if n.startswith(SIGNIN_COOKIE)]
    assert len(names) == MAX_PARALLEL
