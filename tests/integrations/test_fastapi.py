"""The FastAPI / Starlette integration, through an ASGI transport (async tests) and over a real
loopback server (a sync test), against the ``apple_emulator`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from integration_helpers import NOTIFICATIONS, ORIGIN, failure_reasons, serve_on_loopback

from appleconnect import InvalidGrant
from appleconnect.integrations import AppleSignIn
from appleconnect.integrations.fastapi import CurrentAppleUser, router
from appleconnect.testing import AppleEmulator

MARIA = "maria.ruiz@example.com"


@pytest.fixture
def app(apple_sign_in: AppleSignIn) -> FastAPI:
    application = FastAPI()
    application.state.apple_sign_in = apple_sign_in
    application.include_router(router, prefix="/auth/apple")

    @application.get("/me")
    def me(user: CurrentAppleUser) -> dict[str, object]:
        return {
            "sub": user.sub,
            "email": user.email,
            "private": user.is_private_email,
            "name": user.full_name,
            "forwarding": user.email_forwarding,
        }

    return application


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        yield client


@pytest.fixture
async def apple_side(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Apple's form_post is a cross-site POST: the browser sends no Lax cookie with it."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        yield client


async def sign_in(
    emulator: AppleEmulator,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
    account: str = MARIA,
    **consent: object,
) -> httpx.Response:
    """Start, consent at the emulator, form_post, finish; the answer of ``/finish``."""
    started = await browser.get("/auth/apple/start", params={"next": "/me"})
    assert started.status_code == 303
    signed = emulator.authorize(started.headers["location"], account, **consent)  # type: ignore[arg-type]
    posted = await apple_side.post("/auth/apple/callback", data=signed.form)
    assert posted.status_code == 303, posted.text
    return await browser.get(posted.headers["location"])


async def test_first_sign_in_creates_the_account_with_name_and_email(
    apple_emulator: AppleEmulator, browser: httpx.AsyncClient, apple_side: httpx.AsyncClient
) -> None:
    finished = await sign_in(apple_emulator, browser, apple_side, name="María Ruiz")
    assert finished.status_code == 303
    assert finished.headers["location"] == "/me"
    me = await browser.get("/me")
    assert me.json() == {
        "sub": apple_emulator.sub_for(MARIA),
        "email": MARIA,
        "private": False,
        "name": "María Ruiz",
        "forwarding": True,
    }


async def test_the_name_is_kept_from_the_first_sign_in(
    apple_emulator: AppleEmulator, browser: httpx.AsyncClient, apple_side: httpx.AsyncClient
) -> None:
    await sign_in(apple_emulator, browser, apple_side, name="María Ruiz")
    apple_emulator.revoke_consent(MARIA)  # Apple sends the name again after a revocation ...
    await sign_in(apple_emulator, browser, apple_side, name="Someone Else")
    assert (await browser.get("/me")).json()["name"] == "María Ruiz"  # ... but the first is kept


async def test_hidden_email_sets_the_relay_flag(
    apple_emulator: AppleEmulator, browser: httpx.AsyncClient, apple_side: httpx.AsyncClient
) -> None:
    await sign_in(apple_emulator, browser, apple_side, "li.wei@example.com", share_email=False)
    me = (await browser.get("/me")).json()
    assert me["private"] is True
    assert me["email"].endswith("@privaterelay.appleid.com")


async def test_a_state_is_used_once(
    apple_emulator: AppleEmulator,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = await browser.get("/auth/apple/start")
    signed = apple_emulator.authorize(started.headers["location"])
    assert (await apple_side.post("/auth/apple/callback", data=signed.form)).status_code == 303
    replay = await apple_side.post("/auth/apple/callback", data=signed.form)
    assert replay.status_code == 400
    assert failure_reasons(caplog) == ["unknown_state"]


async def test_another_browser_cannot_finish_the_sign_in(
    apple_emulator: AppleEmulator,
    app: FastAPI,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = await browser.get("/auth/apple/start")
    signed = apple_emulator.authorize(started.headers["location"])
    posted = await apple_side.post("/auth/apple/callback", data=signed.form)
    victim = await apple_side.get(posted.headers["location"])  # no browser cookie
    assert victim.status_code == 400
    assert failure_reasons(caplog) == ["browser"]
    assert app.state.apple_sign_in.store.get_account(apple_emulator.sub_for(MARIA)) is None


async def test_a_code_issued_for_another_nonce_is_refused(
    apple_emulator: AppleEmulator,
    app: FastAPI,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = await browser.get("/auth/apple/start")
    state = httpx.URL(started.headers["location"]).params["state"]
    redirect = app.state.apple_sign_in.redirect_uri
    forged = apple_emulator.sign_in(
        state=state, nonce="attacker-nonce-0123456789", redirect_uri=redirect
    )
    answer = await apple_side.post("/auth/apple/callback", data=forged.form)
    assert answer.status_code == 400
    [reason] = failure_reasons(caplog)
    assert reason == "token"
    assert "nonce" in caplog.text


async def test_cancel_is_a_failed_sign_in(
    apple_emulator: AppleEmulator,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = await browser.get("/auth/apple/start")
    signed = apple_emulator.authorize(started.headers["location"], cancel=True)
    assert (await apple_side.post("/auth/apple/callback", data=signed.form)).status_code == 400
    assert failure_reasons(caplog) == ["cancelled"]


async def test_next_must_stay_on_this_site(
    apple_emulator: AppleEmulator, browser: httpx.AsyncClient, apple_side: httpx.AsyncClient
) -> None:
    started = await browser.get("/auth/apple/start", params={"next": "//evil.example/x"})
    signed = apple_emulator.authorize(started.headers["location"])
    posted = await apple_side.post("/auth/apple/callback", data=signed.form)
    finished = await browser.get(posted.headers["location"])
    assert finished.headers["location"] == "/"


async def test_no_session_is_401(browser: httpx.AsyncClient) -> None:
    assert (await browser.get("/me")).status_code == 401


async def test_consent_revoked_ends_sessions_and_drops_the_refresh_token(
    apple_emulator: AppleEmulator,
    app: FastAPI,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
) -> None:
    await sign_in(apple_emulator, browser, apple_side)
    apple_emulator.set_notification_url(NOTIFICATIONS, asgi_app=app)
    [sent] = apple_emulator.revoke_consent(MARIA)
    assert sent.status == "delivered"
    assert (await browser.get("/me")).status_code == 401
    account = app.state.apple_sign_in.store.get_account(apple_emulator.sub_for(MARIA))
    assert account is not None
    assert account.refresh_token is None


async def test_email_forwarding_notifications_set_the_flag_once_per_jti(
    apple_emulator: AppleEmulator,
    app: FastAPI,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
) -> None:
    await sign_in(apple_emulator, browser, apple_side, "li.wei@example.com", share_email=False)
    apple_emulator.set_notification_url(NOTIFICATIONS, asgi_app=app)
    [disabled] = apple_emulator.set_email_forwarding("li.wei@example.com", False)
    assert (await browser.get("/me")).json()["forwarding"] is False
    apple_emulator.set_email_forwarding("li.wei@example.com", True)
    assert (await browser.get("/me")).json()["forwarding"] is True
    replayed = await apple_side.post("/auth/apple/notifications", json=disabled.body)
    assert replayed.status_code == 200
    assert (await browser.get("/me")).json()["forwarding"] is True  # a replay changes nothing


async def test_account_delete_notification_forgets_the_account(
    apple_emulator: AppleEmulator,
    app: FastAPI,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
) -> None:
    await sign_in(apple_emulator, browser, apple_side)
    sub = apple_emulator.sub_for(MARIA)
    apple_emulator.set_notification_url(NOTIFICATIONS, asgi_app=app)
    [sent] = apple_emulator.delete_account(MARIA)
    assert sent.status == "delivered"
    assert app.state.apple_sign_in.store.get_account(sub) is None
    assert (await browser.get("/me")).status_code == 401


async def test_a_notification_apple_did_not_sign_is_refused(
    apple_side: httpx.AsyncClient, app: FastAPI
) -> None:
    forged = "eyJraWQiOiJ4IiwiYWxnIjoiUlMyNTYifQ.eyJzdWIiOiJ4In0.c2ln"
    answer = await apple_side.post("/auth/apple/notifications", json={"payload": forged})
    assert answer.status_code == 400


async def test_deleting_the_account_revokes_at_apple_first(
    apple_emulator: AppleEmulator,
    app: FastAPI,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
) -> None:
    await sign_in(apple_emulator, browser, apple_side)
    sub = apple_emulator.sub_for(MARIA)
    refresh = app.state.apple_sign_in.store.get_account(sub).refresh_token
    assert refresh is not None
    assert (await browser.post("/auth/apple/delete-account")).status_code == 204
    assert app.state.apple_sign_in.store.get_account(sub) is None
    with pytest.raises(InvalidGrant, match="revoked"):
        apple_emulator.client().refresh(refresh)


async def test_deletion_keeps_the_account_when_apple_is_down(
    apple_emulator: AppleEmulator,
    app: FastAPI,
    browser: httpx.AsyncClient,
    apple_side: httpx.AsyncClient,
) -> None:
    await sign_in(apple_emulator, browser, apple_side)
    apple_emulator.fail("revoke", "status", status=503, count=2)
    assert (await browser.post("/auth/apple/delete-account")).status_code == 503
    assert (await browser.get("/me")).status_code == 200


def test_sync_client_over_a_real_server(
    apple_emulator: AppleEmulator, app: FastAPI, apple_sign_in: AppleSignIn
) -> None:
    with serve_on_loopback(app) as base:
        callback = f"{base}/auth/apple/callback"
        apple_emulator.register_redirect_uri(callback)
        apple_sign_in.redirect_uri = callback
        apple_sign_in.secure_cookies = False  # plain http on loopback
        with httpx.Client(base_url=base) as browser, httpx.Client(base_url=base) as apple:
            started = browser.get("/auth/apple/start")
            signed = apple_emulator.authorize(started.headers["location"])
            posted = apple.post("/auth/apple/callback", data=signed.form)
            browser.get(posted.headers["location"])
            assert browser.get("/me").json()["email"] == MARIA
