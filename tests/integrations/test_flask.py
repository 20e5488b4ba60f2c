"""The Flask integration, with Flask's test client against the ``apple_emulator`` fixture."""

from __future__ import annotations

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from integration_helpers import NOTIFICATIONS, account_json, failure_reasons

from appleconnect import InvalidGrant
from appleconnect.integrations import AppleSignIn
from appleconnect.integrations.flask import apple_login_required, current_apple_user, init_app
from appleconnect.testing import AppleEmulator

MARIA = "maria.ruiz@example.com"


@pytest.fixture
def app(apple_sign_in: AppleSignIn) -> Flask:
    application = Flask(__name__)
    init_app(application, apple_sign_in)

    @application.get("/me")
    @apple_login_required
    def me() -> dict[str, object]:
        return account_json(current_apple_user())

    return application


@pytest.fixture
def browser(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def apple_side(app: Flask) -> FlaskClient:
    """Apple's form_post is a cross-site POST: it carries none of the browser's Lax cookies."""
    return app.test_client()


def sign_in(
    emulator: AppleEmulator,
    browser: FlaskClient,
    apple_side: FlaskClient,
    account: str = MARIA,
    **consent: object,
) -> str:
    """Start, consent, form_post and finish; where ``/finish`` sends the browser."""
    started = browser.get("/auth/apple/start?next=/me")
    assert started.status_code == 303
    signed = emulator.authorize(started.headers["Location"], account, **consent)  # type: ignore[arg-type]
    posted = apple_side.post("/auth/apple/callback", data=signed.form)
    assert posted.status_code == 303, posted.text
    finished = browser.get(posted.headers["Location"])
    assert finished.status_code == 303, finished.text
    return finished.headers["Location"]


def test_first_sign_in_creates_the_account(
    apple_emulator: AppleEmulator, browser: FlaskClient, apple_side: FlaskClient
) -> None:
    assert sign_in(apple_emulator, browser, apple_side, name="María Ruiz") == "/me"
    assert browser.get("/me").json == {
        "sub": apple_emulator.sub_for(MARIA),
        "email": MARIA,
        "private": False,
        "name": "María Ruiz",
        "forwarding": True,
    }


def test_name_from_the_first_sign_in_and_relay_flag(
    apple_emulator: AppleEmulator, browser: FlaskClient, apple_side: FlaskClient
) -> None:
    li = "li.wei@example.com"
    sign_in(apple_emulator, browser, apple_side, li, share_email=False, name="Li Wei")
    apple_emulator.revoke_consent(li)
    sign_in(apple_emulator, browser, apple_side, li, share_email=False, name="Other Name")
    me = browser.get("/me").json
    assert me is not None
    assert me["name"] == "Li Wei"
    assert me["private"] is True
    assert me["email"].endswith("@privaterelay.appleid.com")


def test_state_once_and_bound_to_the_browser(
    app: Flask,
    apple_emulator: AppleEmulator,
    browser: FlaskClient,
    apple_side: FlaskClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = browser.get("/auth/apple/start")
    signed = apple_emulator.authorize(started.headers["Location"])
    posted = apple_side.post("/auth/apple/callback", data=signed.form)
    assert apple_side.post("/auth/apple/callback", data=signed.form).status_code == 400
    other = app.test_client()  # another browser, with a sign-in of its own
    assert other.get("/auth/apple/start").status_code == 303
    assert other.get_cookie("apple_signin_browser") is not None
    assert other.get(posted.headers["Location"]).status_code == 400  # not its browser
    assert other.get("/me").status_code == 401
    assert failure_reasons(caplog) == ["unknown_state", "browser"]
    assert browser.get("/me").status_code == 401


def test_a_code_for_another_nonce_is_refused(
    apple_emulator: AppleEmulator,
    app: Flask,
    browser: FlaskClient,
    apple_side: FlaskClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = browser.get("/auth/apple/start")
    state = httpx.URL(started.headers["Location"]).params["state"]
    redirect = app.extensions["appleconnect"].redirect_uri
    forged = apple_emulator.sign_in(
        state=state, nonce="attacker-nonce-0123456789", redirect_uri=redirect
    )
    assert apple_side.post("/auth/apple/callback", data=forged.form).status_code == 400
    assert failure_reasons(caplog) == ["token"]
    assert "nonce" in caplog.text


def test_notifications_are_applied(
    apple_emulator: AppleEmulator, app: Flask, browser: FlaskClient, apple_side: FlaskClient
) -> None:
    li = "li.wei@example.com"
    sign_in(apple_emulator, browser, apple_side, li, share_email=False)
    apple_emulator.set_notification_url(NOTIFICATIONS, wsgi_app=app)
    apple_emulator.set_email_forwarding(li, False)
    assert browser.get("/me").json["forwarding"] is False  # type: ignore[index]
    apple_emulator.set_email_forwarding(li, True)
    assert browser.get("/me").json["forwarding"] is True  # type: ignore[index]
    [revoked] = apple_emulator.revoke_consent(li)
    assert revoked.status == "delivered"
    assert browser.get("/me").status_code == 401
    sign_in(apple_emulator, browser, apple_side, li)
    [deleted] = apple_emulator.delete_account(li)
    assert deleted.status == "delivered"
    assert app.extensions["appleconnect"].store.get_account(deleted.sub) is None


def test_a_forged_notification_is_refused(apple_side: FlaskClient) -> None:
    forged = {"payload": "eyJraWQiOiJ4IiwiYWxnIjoiUlMyNTYifQ.eyJzdWIiOiJ4In0.c2ln"}
    assert apple_side.post("/auth/apple/notifications", json=forged).status_code == 400


def test_a_notification_during_a_key_outage_asks_apple_to_deliver_again(
    apple_emulator: AppleEmulator, app: Flask, browser: FlaskClient, apple_side: FlaskClient
) -> None:
    sign_in(apple_emulator, browser, apple_side)
    apple_emulator.rotate_keys()
    apple_emulator.fail("keys", count=None, probability=1)
    apple_emulator.advance_clock(61)
    [sent] = apple_emulator.delete_account(MARIA)
    answer = apple_side.post("/auth/apple/notifications", json=sent.body)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert app.extensions["appleconnect"].store.get_account(sent.sub) is not None


def test_deleting_the_account_revokes_at_apple(
    apple_emulator: AppleEmulator, app: Flask, browser: FlaskClient, apple_side: FlaskClient
) -> None:
    sign_in(apple_emulator, browser, apple_side)
    store = app.extensions["appleconnect"].store
    account = store.get_account(apple_emulator.sub_for(MARIA))
    refresh = app.extensions["appleconnect"].refresh_token_of(account)
    assert browser.post("/auth/apple/delete-account").status_code == 204
    assert store.get_account(account.sub) is None
    with pytest.raises(InvalidGrant, match="revoked"):
        apple_emulator.client().refresh(refresh)


def test_answers_that_set_cookies_or_carry_tokens_are_not_cached(
    apple_emulator: AppleEmulator, browser: FlaskClient, apple_side: FlaskClient
) -> None:
    started = browser.get("/auth/apple/start")
    signed = apple_emulator.authorize(started.headers["Location"])
    posted = apple_side.post("/auth/apple/callback", data=signed.form)
    finished = browser.get(posted.headers["Location"])
    assert any(c.startswith("apple_session=") for c in finished.headers.getlist("Set-Cookie"))
    again = browser.get(posted.headers["Location"])  # the failure page
    signed_out = browser.post("/auth/apple/sign-out")
    for answer in (started, posted, finished, again, signed_out):
        assert answer.headers["Cache-Control"] == "no-store", answer.request.url


def test_bodies_larger_than_apple_sends_are_refused_unread(
    apple_emulator: AppleEmulator, browser: FlaskClient, apple_side: FlaskClient
) -> None:
    signed = apple_emulator.authorize(browser.get("/auth/apple/start").headers["Location"])
    padded = {**signed.form, "padding": "x" * 17 * 1024}
    assert apple_side.post("/auth/apple/callback", data=padded).status_code == 413
    assert apple_side.post("/auth/apple/callback", data=signed.form).status_code == 303
    big = apple_side.post("/auth/apple/notifications", data=b"{" * (65 * 1024))
    assert big.status_code == 413
