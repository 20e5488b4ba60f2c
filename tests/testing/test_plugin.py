"""The ``apple_emulator`` fixture and its helpers, used the way a project's own tests use them:
through the client library, over loopback HTTP, and with Apple's real notifications."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time

import httpx
import pytest

from appleconnect import (
    AppleUnavailable,
    InvalidGrant,
    InvalidIdentityToken,
    Notification,
    parse_notification,
)
from appleconnect.testing import AppleEmulator, EmulatorError

NONCE = "n0nce-" + "q" * 20


def test_credentials_describe_the_default_team(apple_emulator: AppleEmulator) -> None:
    c = apple_emulator.credentials
    assert (c.services_id, c.app_id) == ("com.example.web", "com.example.app")
    assert len(c.team_id) == 10
    assert len(c.key_id) == 10
    assert c.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert c.redirect_uri == "http://localhost:8000/auth/apple/callback"
    assert c.issuer == "https://appleid.apple.com"


def test_first_sign_in_delivers_user_then_the_library_exchanges_and_verifies(
    apple_emulator: AppleEmulator,
) -> None:
    apple = apple_emulator.client()
    first = apple_emulator.sign_in(nonce=NONCE, state="s" * 20, name="Ana Ruiz")
    assert first.state == "s" * 20
    assert first.response_mode == "form_post"
    assert first.redirect_uri == apple_emulator.credentials.redirect_uri
    assert first.user_json == {
        "name": {"firstName": "Ana", "lastName": "Ruiz"},
        "email": "maria.ruiz@example.com",
    }
    assert set(first.form) == {"code", "id_token", "state", "user"}
    tokens = apple.exchange_code(first.code or "", redirect_uri=first.redirect_uri or "")
    identity = apple.verify_identity_token(tokens.id_token, nonce=NONCE)
    assert identity.email == "maria.ruiz@example.com"
    assert identity.is_private_email is False
    assert identity.sub == apple_emulator.sub_for("maria.ruiz@example.com")

    again = apple_emulator.sign_in(nonce=NONCE)
    assert again.user is None  # Apple sends the name and email only the first time


def test_hidden_email_is_a_relay_address(apple_emulator: AppleEmulator) -> None:
    apple = apple_emulator.client()
    signed = apple_emulator.sign_in("li.wei@example.com", share_email=False)
    identity = apple.verify_identity_token(signed.id_token or "")
    assert identity.email is not None
    assert identity.email.endswith("@privaterelay.appleid.com")
    assert identity.is_private_email is True


def test_authorize_follows_the_url_your_app_made(apple_emulator: AppleEmulator) -> None:
    apple = apple_emulator.client()
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    url = apple.authorization_url(apple_emulator.credentials.redirect_uri, state=state, nonce=nonce)
    signed = apple_emulator.authorize(url, "sam.okafor@example.com")
    assert signed.state == state
    assert signed.id_token is None  # the library asks for response_type=code by default
    tokens = apple.exchange_code(signed.code or "", redirect_uri=signed.redirect_uri or "")
    identity = apple.verify_identity_token(tokens.id_token, nonce=nonce)
    assert identity.email == "sam.okafor@example.com"


def test_register_redirect_uri_allows_a_new_callback(apple_emulator: AppleEmulator) -> None:
    callback = "http://testserver/accounts/apple/login/callback/"
    with pytest.raises(EmulatorError, match="Invalid web redirect url"):
        apple_emulator.sign_in(redirect_uri=callback)
    apple_emulator.register_redirect_uri(callback)
    assert apple_emulator.sign_in(redirect_uri=callback).redirect_uri == callback


def test_cancel_delivers_apple_error(apple_emulator: AppleEmulator) -> None:
    signed = apple_emulator.sign_in(cancel=True, state="c" * 20)
    assert signed.error == "user_cancelled_authorize"
    assert signed.code is None
    assert signed.form == {"error": "user_cancelled_authorize", "state": "c" * 20}


def test_create_account_then_sign_in_with_it(apple_emulator: AppleEmulator) -> None:
    account = apple_emulator.create_account("zoe@example.com", "Zoé Martin")
    assert (account.email, account.first_name, account.last_name) == (
        "zoe@example.com",
        "Zoé",
        "Martin",
    )
    signed = apple_emulator.sign_in("zoe@example.com")
    assert signed.user_json is not None
    assert signed.user_json["name"] == {"firstName": "Zoé", "lastName": "Martin"}


def test_unknown_account_raises_emulator_error(apple_emulator: AppleEmulator) -> None:
    with pytest.raises(EmulatorError) as caught:
        apple_emulator.sign_in("nobody@example.com")
    assert caught.value.status == 404
    assert caught.value.detail == "No Apple ID 'nobody@example.com'."


def test_unregistered_redirect_uri_is_refused_like_apple(apple_emulator: AppleEmulator) -> None:
    with pytest.raises(EmulatorError) as caught:
        apple_emulator.sign_in(redirect_uri="https://evil.example/cb")
    assert caught.value.error == "unauthorized_client"
    assert caught.value.detail == "Invalid web redirect url."


def test_revoke_consent_sends_a_notification_and_ends_the_tokens(
    apple_emulator: AppleEmulator,
) -> None:
    apple = apple_emulator.client()
    signed = apple_emulator.sign_in()
    tokens = apple.exchange_code(signed.code or "", redirect_uri=signed.redirect_uri or "")
    assert tokens.refresh_token is not None

    sent = apple_emulator.revoke_consent("maria.ruiz@example.com")

    assert [n.type for n in sent] == ["consent-revoked"]
    assert sent[0].status == "no-url"
    notification = parse_notification(
        sent[0].body, apple.keys, audiences=[apple_emulator.credentials.app_id]
    )
    assert notification.type == Notification.CONSENT_REVOKED
    assert notification.sub == apple_emulator.sub_for("maria.ruiz@example.com")
    with pytest.raises(InvalidGrant) as caught:
        apple.refresh(tokens.refresh_token)
    assert caught.value.error_description == "The token has expired or has been revoked."
    assert apple_emulator.sign_in().user is not None  # first-time consent again


def test_email_forwarding_notifies_only_teams_with_hidden_email(
    apple_emulator: AppleEmulator,
) -> None:
    apple_emulator.sign_in("maria.ruiz@example.com", share_email=True)
    apple_emulator.sign_in("li.wei@example.com", share_email=False)
    assert apple_emulator.set_email_forwarding("maria.ruiz@example.com", False) == []
    sent = apple_emulator.set_email_forwarding("li.wei@example.com", False)
    assert [n.type for n in sent] == ["email-disabled"]
    sent = apple_emulator.set_email_forwarding("li.wei@example.com", True)
    assert [n.type for n in sent] == ["email-enabled"]
    assert [n.type for n in apple_emulator.notifications()] == ["email-disabled", "email-enabled"]


def test_delete_account_notifies_and_removes_the_apple_id(apple_emulator: AppleEmulator) -> None:
    apple = apple_emulator.client()
    apple_emulator.sign_in("sam.okafor@example.com")
    sub = apple_emulator.sub_for("sam.okafor@example.com")
    sent = apple_emulator.delete_account("sam.okafor@example.com")
    notification = parse_notification(
        sent[0].body, apple.keys, audiences=[apple_emulator.credentials.app_id]
    )
    assert (notification.type, notification.sub) == (Notification.ACCOUNT_DELETED, sub)
    with pytest.raises(EmulatorError, match="No Apple ID"):
        apple_emulator.account("sam.okafor@example.com")


def test_notifications_reach_a_server_on_loopback(apple_emulator: AppleEmulator) -> None:
    # The emulator itself serves as the receiving server: its control API answers 404 JSON for
    # an unknown path, so the delivery is attempted over the socket and recorded as failed.
    apple_emulator.sign_in()
    apple_emulator.set_notification_url(f"{apple_emulator.base_url}/no-such-path")
    sent = apple_emulator.revoke_consent("maria.ruiz@example.com")
    assert sent[0].status == "failed"
    assert sent[0].url == f"{apple_emulator.base_url}/no-such-path"


def test_notifications_reach_an_in_process_asgi_app(apple_emulator: AppleEmulator) -> None:
    received: list[bytes] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        assert scope["type"] == "http"
        message = await receive()  # type: ignore[operator]
        received.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    apple_emulator.sign_in()
    apple_emulator.set_notification_url("http://myapp.test/apple/notifications", asgi_app=app)
    sent = apple_emulator.revoke_consent("maria.ruiz@example.com")
    assert sent[0].status == "delivered"
    assert json.loads(received[0]) == {"payload": sent[0].payload}


def test_notifications_reach_an_in_process_wsgi_app(apple_emulator: AppleEmulator) -> None:
    received: list[bytes] = []

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        length = int(str(environ["CONTENT_LENGTH"]))
        received.append(environ["wsgi.input"].read(length))  # type: ignore[attr-defined]
        start_response("204 No Content", [])  # type: ignore[operator]
        return []

    apple_emulator.sign_in("li.wei@example.com", share_email=False)
    apple_emulator.set_notification_url("http://wsgi.test/apple", wsgi_app=app)
    sent = apple_emulator.set_email_forwarding("li.wei@example.com", False)
    assert sent[0].status == "delivered"
    assert json.loads(received[0]) == {"payload": sent[0].payload}


def test_rotate_keys_new_tokens_verify_with_the_new_key(apple_emulator: AppleEmulator) -> None:
    apple = apple_emulator.client()
    before = apple_emulator.sign_in().id_token or ""
    apple.verify_identity_token(before)  # the client now holds the old key set
    kid = apple_emulator.rotate_keys(grace_seconds=0)
    after = apple_emulator.sign_in().id_token or ""
    assert _header(after)["kid"] == kid != _header(before)["kid"]
    assert apple_emulator.client().verify_identity_token(after).email == "maria.ruiz@example.com"
    # A client that fetched the keys less than a minute ago does not fetch them again ...
    with pytest.raises(InvalidIdentityToken) as caught:
        apple.verify_identity_token(after)
    assert caught.value.reason == "kid"
    # ... but it follows the emulator's clock.
    apple_emulator.advance_clock(61)
    assert apple.verify_identity_token(after).email == "maria.ruiz@example.com"


def test_fail_makes_the_token_endpoint_unavailable(apple_emulator: AppleEmulator) -> None:
    apple = apple_emulator.client()
    signed = apple_emulator.sign_in()
    apple_emulator.fail("token", "status", status=503, count=1)
    with pytest.raises(AppleUnavailable, match="503"):
        apple.exchange_code(signed.code or "", redirect_uri=signed.redirect_uri or "")
    # The failed request did not spend the code: the next one succeeds.
    tokens = apple.exchange_code(signed.code or "", redirect_uri=signed.redirect_uri or "")
    assert tokens.id_token


def test_advance_clock_expires_codes(apple_emulator: AppleEmulator) -> None:
    apple = apple_emulator.client()
    signed = apple_emulator.sign_in()
    before = apple_emulator.now()
    assert apple_emulator.advance_clock(301) >= before + 301
    with pytest.raises(InvalidGrant) as caught:
        apple.exchange_code(signed.code or "", redirect_uri=signed.redirect_uri or "")
    assert caught.value.error_description == "The code has expired or has been revoked."


def test_loopback_http_for_any_client(apple_emulator: AppleEmulator) -> None:
    assert apple_emulator.base_url.startswith("http://127.0.0.1:")
    document = httpx.get(f"{apple_emulator.base_url}/.well-known/openid-configuration").json()
    assert document["token_endpoint"] == f"{apple_emulator.base_url}/auth/token"
    apple = apple_emulator.client(in_process=False)
    signed = apple_emulator.sign_in()
    tokens = apple.exchange_code(signed.code or "", redirect_uri=signed.redirect_uri or "")
    assert apple.verify_identity_token(tokens.id_token).email == "maria.ruiz@example.com"


def test_native_client_uses_the_app_id(apple_emulator: AppleEmulator) -> None:
    apple = apple_emulator.client(apple_emulator.credentials.app_id)
    signed = apple_emulator.sign_in(client_id=apple_emulator.credentials.app_id)
    assert signed.response_mode == "native"
    tokens = apple.exchange_code(signed.code or "")
    assert apple.verify_identity_token(tokens.id_token).audience == "com.example.app"


async def test_async_tests_use_the_async_client(apple_emulator: AppleEmulator) -> None:
    signed = apple_emulator.sign_in(nonce=NONCE)  # a synchronous helper inside a running loop
    async with apple_emulator.async_client() as apple:
        tokens = await apple.exchange_code(
            signed.code or "", redirect_uri=signed.redirect_uri or ""
        )
        identity = await apple.verify_identity_token(tokens.id_token, nonce=NONCE)
    assert identity.email == "maria.ruiz@example.com"


def test_reset_with_a_delivery_still_in_flight(apple_emulator: AppleEmulator) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        apple_emulator.sign_in()
        apple_emulator.set_notification_url(f"http://127.0.0.1:{silent.getsockname()[1]}/apple")
        answer = httpx.post(
            f"{apple_emulator.base_url}/emulator/accounts/maria.ruiz@example.com/revoke-consent",
            json={},  # no "wait": delivered in the background
        )
        assert [n["status"] for n in answer.json()["notifications"]] == ["pending"]
        apple_emulator.reset()
        assert apple_emulator.notifications() == []


def test_isolation_1_change_everything(apple_emulator: AppleEmulator) -> None:
    _change_everything(apple_emulator)


def test_isolation_2_the_next_test_sees_a_fresh_emulator(apple_emulator: AppleEmulator) -> None:
    _assert_fresh(apple_emulator)


def _change_everything(emulator: AppleEmulator) -> None:
    emulator.create_account("extra@example.com")
    emulator.sign_in()
    emulator.revoke_consent("li.wei@example.com")
    emulator.rotate_keys()
    emulator.fail("keys", "status", status=500, count=5)
    emulator.advance_clock(3600)


def _assert_fresh(emulator: AppleEmulator) -> None:
    assert [a["email"] for a in _accounts(emulator)] == [
        "maria.ruiz@example.com",
        "li.wei@example.com",
        "sam.okafor@example.com",
    ]
    assert emulator.notifications() == []
    assert abs(emulator.now() - time.time()) < 60
    assert len(httpx.get(f"{emulator.base_url}/auth/keys").json()["keys"]) == 1
    assert emulator.sign_in().user is not None  # no consent left over


def _accounts(emulator: AppleEmulator) -> list[dict[str, object]]:
    result: list[dict[str, object]] = httpx.get(f"{emulator.base_url}/emulator/accounts").json()
    return result


def _header(token: str) -> dict[str, str]:
    part = token.split(".")[0]
    result: dict[str, str] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return result
