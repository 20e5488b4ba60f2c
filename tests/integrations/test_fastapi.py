"""The FastAPI / Starlette integration, through an ASGI transport (async tests) and over a real
loopback server (a sync test), against the ``apple_emulator`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from integration_helpers import (
    NOTIFICATIONS,
    ORIGIN,
    account_json,
    failure_reasons,
    serve_on_loopback,
)

from appleconnect import InvalidGrant
from appleconnect.integrations import AppleAccount, AppleSignIn
from appleconnect.integrations.fastapi import CurrentAppleUser, router
from appleconnect.testing import AppleEmulator, SignIn

MARIA = "maria.ruiz@example.com"
LI = "li.wei@example.com"


@pytest.fixture
def app(apple_sign_in: AppleSignIn) -> FastAPI:
    application = FastAPI()
    application.state.apple_sign_in = apple_sign_in
    application.include_router(router, prefix="/auth/apple")

    @application.get("/me")
    def me(user: CurrentAppleUser) -> dict[str, object]:
        return account_json(user)

    return application


@dataclass
class Flow:
    """The app, the emulator, the user's browser and Apple's side (Apple's form_post is a
    cross-site POST: it carries none of the browser's Lax cookies)."""

    emulator: AppleEmulator
    app: FastAPI
    browser: httpx.AsyncClient
    apple_side: httpx.AsyncClient

    def account(self, email: str = MARIA) -> AppleAccount | None:
        store = self.app.state.apple_sign_in.store
        result: AppleAccount | None = store.get_account(self.emulator.sub_for(email))
        return result

    async def consent(self, account: str = MARIA, next_path: str = "/me", **kw: object) -> SignIn:
        """``/start``, then the user's consent at the emulator: what Apple form_posts."""
        started = await self.browser.get("/auth/apple/start", params={"next": next_path})
        assert started.status_code == 303
        return self.emulator.authorize(started.headers["location"], account, **kw)  # type: ignore[arg-type]

    async def callback(self, signed: SignIn) -> httpx.Response:
        return await self.callback_raw(signed.form)

    async def callback_raw(self, form: dict[str, str]) -> httpx.Response:
        return await self.apple_side.post("/auth/apple/callback", data=form)

    async def sign_in(self, account: str = MARIA, **consent: object) -> httpx.Response:
        """The whole flow; the answer of ``/finish``."""
        posted = await self.callback(await self.consent(account, **consent))
        assert posted.status_code == 303, posted.text
        return await self.browser.get(posted.headers["location"])

    async def me(self) -> httpx.Response:
        return await self.browser.get("/me")


@pytest.fixture
async def flow(apple_emulator: AppleEmulator, app: FastAPI) -> AsyncIterator[Flow]:
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url=ORIGIN) as browser,
        httpx.AsyncClient(transport=transport, base_url=ORIGIN) as apple_side,
    ):
        yield Flow(apple_emulator, app, browser, apple_side)


async def test_first_sign_in_creates_the_account_with_name_and_email(flow: Flow) -> None:
    finished = await flow.sign_in(name="María Ruiz")
    assert finished.status_code == 303
    assert finished.headers["location"] == "/me"
    assert (await flow.me()).json() == {
        "sub": flow.emulator.sub_for(MARIA),
        "email": MARIA,
        "private": False,
        "name": "María Ruiz",
        "forwarding": True,
    }


async def test_the_name_is_kept_from_the_first_sign_in(flow: Flow) -> None:
    await flow.sign_in(name="María Ruiz")
    flow.emulator.revoke_consent(MARIA)  # Apple sends the name again after a revocation ...
    await flow.sign_in(name="Someone Else")
    assert (await flow.me()).json()["name"] == "María Ruiz"  # ... but the first is kept


async def test_hidden_email_sets_the_relay_flag(flow: Flow) -> None:
    await flow.sign_in(LI, share_email=False)
    me = (await flow.me()).json()
    assert me["private"] is True
    assert me["email"].endswith("@privaterelay.appleid.com")


async def test_a_state_is_used_once(flow: Flow, caplog: pytest.LogCaptureFixture) -> None:
    signed = await flow.consent()
    assert (await flow.callback(signed)).status_code == 303
    assert (await flow.callback(signed)).status_code == 400
    assert failure_reasons(caplog) == ["unknown_state"]


async def test_another_browser_cannot_finish_the_sign_in(
    flow: Flow, caplog: pytest.LogCaptureFixture
) -> None:
    posted = await flow.callback(await flow.consent())
    victim = await flow.apple_side.get(posted.headers["location"])  # no browser cookie
    assert victim.status_code == 400
    assert failure_reasons(caplog) == ["browser"]
    assert flow.account() is None


async def test_a_code_issued_for_another_nonce_is_refused(
    flow: Flow, caplog: pytest.LogCaptureFixture
) -> None:
    started = await flow.browser.get("/auth/apple/start")
    state = httpx.URL(started.headers["location"]).params["state"]
    redirect = flow.app.state.apple_sign_in.redirect_uri
    forged = flow.emulator.sign_in(
        state=state, nonce="attacker-nonce-0123456789", redirect_uri=redirect
    )
    assert (await flow.callback(forged)).status_code == 400
    assert failure_reasons(caplog) == ["token"]
    assert "nonce" in caplog.text


async def test_cancel_is_a_failed_sign_in(flow: Flow, caplog: pytest.LogCaptureFixture) -> None:
    assert (await flow.callback(await flow.consent(cancel=True))).status_code == 400
    assert failure_reasons(caplog) == ["cancelled"]


async def test_next_must_stay_on_this_site(flow: Flow) -> None:
    posted = await flow.callback(await flow.consent(next_path="//evil.example/x"))
    finished = await flow.browser.get(posted.headers["location"])
    assert finished.headers["location"] == "/"


async def test_no_session_is_401(flow: Flow) -> None:
    assert (await flow.me()).status_code == 401


async def test_consent_revoked_ends_sessions_and_drops_the_refresh_token(flow: Flow) -> None:
    await flow.sign_in()
    flow.emulator.set_notification_url(NOTIFICATIONS, asgi_app=flow.app)
    [sent] = flow.emulator.revoke_consent(MARIA)
    assert sent.status == "delivered"
    assert (await flow.me()).status_code == 401
    account = flow.account()
    assert account is not None
    assert account.encrypted_refresh_token is None


async def test_email_forwarding_notifications_set_the_flag_once_per_jti(flow: Flow) -> None:
    await flow.sign_in(LI, share_email=False)
    flow.emulator.set_notification_url(NOTIFICATIONS, asgi_app=flow.app)
    [disabled] = flow.emulator.set_email_forwarding(LI, False)
    assert (await flow.me()).json()["forwarding"] is False
    flow.emulator.set_email_forwarding(LI, True)
    assert (await flow.me()).json()["forwarding"] is True
    replayed = await flow.apple_side.post("/auth/apple/notifications", json=disabled.body)
    assert replayed.status_code == 200
    assert (await flow.me()).json()["forwarding"] is True  # a replay changes nothing


async def test_account_delete_notification_forgets_the_account(flow: Flow) -> None:
    await flow.sign_in()
    sub = flow.emulator.sub_for(MARIA)
    flow.emulator.set_notification_url(NOTIFICATIONS, asgi_app=flow.app)
    [sent] = flow.emulator.delete_account(MARIA)
    assert sent.status == "delivered"
    assert flow.app.state.apple_sign_in.store.get_account(sub) is None
    assert (await flow.me()).status_code == 401


async def test_a_notification_apple_did_not_sign_is_refused(flow: Flow) -> None:
    forged = "eyJraWQiOiJ4IiwiYWxnIjoiUlMyNTYifQ.eyJzdWIiOiJ4In0.c2ln"
    answer = await flow.apple_side.post("/auth/apple/notifications", json={"payload": forged})
    assert answer.status_code == 400


async def test_a_notification_during_a_key_outage_asks_apple_to_deliver_again(flow: Flow) -> None:
    # Apple rotates its key while /auth/keys fails; a minute passes (the refetch interval).
    await flow.sign_in()
    flow.emulator.rotate_keys()
    flow.emulator.fail("keys", count=None, probability=1)
    flow.emulator.advance_clock(61)
    [sent] = flow.emulator.delete_account(MARIA)
    answer = await flow.apple_side.post("/auth/apple/notifications", json=sent.body)
    assert answer.status_code == 503  # not 400: Apple retries, the deletion is not lost
    assert answer.headers["retry-after"] == "5"
    assert flow.app.state.apple_sign_in.store.get_account(sent.sub) is not None


async def test_deleting_the_account_revokes_at_apple_first(flow: Flow) -> None:
    await flow.sign_in()
    account = flow.account()
    assert account is not None
    refresh = flow.app.state.apple_sign_in.refresh_token_of(account)
    assert refresh is not None
    assert (await flow.browser.post("/auth/apple/delete-account")).status_code == 204
    assert flow.account() is None
    with pytest.raises(InvalidGrant, match="revoked"):
        flow.emulator.client().refresh(refresh)


async def test_deletion_keeps_the_account_when_apple_is_down(flow: Flow) -> None:
    await flow.sign_in()
    flow.emulator.fail("revoke", "status", status=503, count=2)
    assert (await flow.browser.post("/auth/apple/delete-account")).status_code == 503
    assert (await flow.me()).status_code == 200


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


async def test_a_second_browser_with_its_own_sign_in_cannot_finish_the_first(
    flow: Flow, caplog: pytest.LogCaptureFixture
) -> None:
    posted = await flow.callback(await flow.consent())
    transport = httpx.ASGITransport(app=flow.app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as other:
        assert (await other.get("/auth/apple/start")).status_code == 303  # its own cookie
        assert "apple_signin_browser" in other.cookies
        assert (await other.get(posted.headers["location"])).status_code == 400
        assert (await other.get("/me")).status_code == 401
    assert failure_reasons(caplog) == ["browser"]
    assert flow.account() is None


async def test_answers_that_set_cookies_or_carry_tokens_are_not_cached(flow: Flow) -> None:
    started = await flow.browser.get("/auth/apple/start")
    posted = await flow.callback(flow.emulator.authorize(started.headers["location"]))
    finished = await flow.browser.get(posted.headers["location"])
    assert "apple_session=" in finished.headers["set-cookie"]
    again = await flow.browser.get(posted.headers["location"])  # the failure page
    signed_out = await flow.browser.post("/auth/apple/sign-out")
    for answer in (started, posted, finished, again, signed_out):
        assert answer.headers["cache-control"] == "no-store", answer.request.url


async def test_bodies_larger_than_apple_sends_are_refused_unread(flow: Flow) -> None:
    signed = await flow.consent()
    padded = {**signed.form, "padding": "x" * 17 * 1024}
    assert (await flow.callback_raw(padded)).status_code == 413
    assert (await flow.callback(signed)).status_code == 303  # the state was not used up
    big = await flow.apple_side.post("/auth/apple/notifications", content=b"{" * (65 * 1024))
    assert big.status_code == 413
