"""End-to-end: the web flow and the REST API against the in-process emulator, on SQLite and
on PostgreSQL (each test runs once per backend)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from server_helpers import Env
from sqlalchemy import func, select, update

from appleconnect import InvalidGrant
from appleconnect.server import store
from appleconnect.server.models import AppleToken, AuditEvent, AuthRequest, Session, User, utcnow

MARIA = "maria.ruiz@example.com"
LI = "li.wei@example.com"


async def users_count(env: Env) -> int:
    async with env.service.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(User)) or 0)


async def the_user(env: Env, email: str = MARIA) -> User:
    async with env.service.sessions() as db:
        user = await db.scalar(select(User).where(User.email == email))
    assert user is not None
    return user


def error_of(response: httpx.Response) -> tuple[int, str, str | None]:
    body = response.json()
    assert body["status"] == "error"
    assert isinstance(body["message"], str)
    assert body["message"].endswith(".")
    return response.status_code, body["error"], body.get("field")


# --- web flow -------------------------------------------------------------------------------


async def test_web_sign_in_sets_a_lax_httponly_cookie_and_keeps_the_first_name(env: Env) -> None:
    finish = await env.web_sign_in(next_path="/account?tab=1", name="Maria Ruiz")
    assert finish.headers["location"] == "/account?tab=1"
    cookie = finish.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # sandbox on plain http
    token = finish.cookies[env.settings.cookie_name]
    info = await env.http.get("/api/get_currentuserinfo", params={"cookie": token})
    user = info.json()["user"]
    assert user["name"] == "Maria Ruiz"
    assert user["role"] == "subscriber"
    assert user["email"] is not None

    # Apple sends no name the second time; the name stays.
    second = await env.web_sign_in(name=None)
    token2 = second.cookies[env.settings.cookie_name]
    again = (await env.http.get("/api/get_currentuserinfo", params={"cookie": token2})).json()
    assert again["user"]["name"] == "Maria Ruiz"
    assert again["user"]["id"] == user["id"]
    assert await users_count(env) == 1


async def test_callback_needs_no_cookie_and_the_demo_page_shows_the_user(env: Env) -> None:
    finish = await env.web_sign_in()
    env.http.cookies.clear()
    env.http.cookies.set(env.settings.cookie_name, finish.cookies[env.settings.cookie_name])
    page = await env.http.get("/")
    assert page.status_code == 200
    assert "You are signed in." in page.text


async def test_the_demo_page_asks_before_deleting_the_account(env: Env) -> None:
    assert (await env.http.get("/auth/delete")).headers["location"] == "/"  # signed out
    finish = await env.web_sign_in()
    env.http.cookies.set(env.settings.cookie_name, finish.cookies[env.settings.cookie_name])
    demo = await env.http.get("/")
    assert '<a class="button danger" href="/auth/delete">Delete my account…</a>' in demo.text
    asked = await env.http.get("/auth/delete")
    assert asked.status_code == 200
    assert "revokes this app's access to your Apple ID at Apple" in asked.text
    assert '<input type="hidden" name="confirm" value="delete">' in asked.text
    # A POST without the confirmation (the old one-click form) shows the question, deletes nothing.
    for unconfirmed in ({}, {"confirm": "yes"}):
        shown = await env.http.post("/auth/delete", data=unconfirmed)
        assert shown.status_code == 200
        assert "Delete your account?" in shown.text
    assert await users_count(env) == 1
    user = await the_user(env)
    deleted = await env.http.post("/auth/delete", data={"confirm": "delete"})
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/?signin=deleted"
    assert await users_count(env) == 0
    async with env.service.sessions() as db:
        events = await store.audit_events(db=db, sub=user.sub)
    assert events[-1].event == "user.deleted"
    assert json.loads(events[-1].detail)["revoked"] == [env.settings.client_id]
    assert "Your account was deleted." in (await env.http.get("/?signin=deleted")).text


async def test_cancel_returns_to_next_with_a_message(env: Env) -> None:
    start = await env.http.get("/auth/apple/start", params={"next": "/here"})
    form = await env.consent(start.headers["location"], cancel=True)
    assert form["error"] == "user_cancelled_authorize"
    callback = await env.http.post("/auth/apple/callback", data=form)
    assert callback.status_code == 303
    assert callback.headers["location"] == "/here?signin=cancelled"
    page = await env.http.get("/?signin=cancelled")
    assert "Sign in with Apple was cancelled." in page.text
    assert await users_count(env) == 0


async def test_state_replay_is_refused(env: Env) -> None:
    start = await env.http.get("/auth/apple/start")
    form = await env.consent(start.headers["location"])
    first = await env.http.post("/auth/apple/callback", data=form)
    assert first.status_code == 303
    replay = await env.http.post("/auth/apple/callback", data=form)
    assert replay.status_code == 400
    assert "This sign-in was already used (each can be finished once); start again." in (
        replay.text
    )


async def test_unknown_state_is_refused_before_any_call_to_apple(env: Env) -> None:
    start = await env.http.get("/auth/apple/start")
    form = await env.consent(start.headers["location"])
    form["state"] = "x" * 43
    response = await env.http.post("/auth/apple/callback", data=form)
    assert response.status_code == 400
    assert "not one this service issued" in response.text
    assert await users_count(env) == 0


async def test_expired_state_is_refused(env: Env) -> None:
    start = await env.http.get("/auth/apple/start")
    form = await env.consent(start.headers["location"])
    async with env.service.sessions() as db:
        await db.execute(update(AuthRequest).values(expires_at=utcnow() - timedelta(seconds=1)))
        await db.commit()
    response = await env.http.post("/auth/apple/callback", data=form)
    assert response.status_code == 400
    assert "expired" in response.text


async def test_handoff_link_works_once(env: Env) -> None:
    start = await env.http.get("/auth/apple/start")
    form = await env.consent(start.headers["location"])
    callback = await env.http.post("/auth/apple/callback", data=form)
    first = await env.http.get(callback.headers["location"])
    assert first.status_code == 303
    second = await env.http.get(callback.headers["location"])
    assert second.status_code == 400
    assert "already used" in second.text


async def test_no_open_redirect(env: Env) -> None:
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example", "evil"):
        response = await env.http.get("/auth/apple/start", params={"next": bad})
        assert response.status_code == 400, bad
        assert "must be a path on this site" in response.text


# --- REST API -------------------------------------------------------------------------------


async def test_apple_connect_native_answers_the_wordpress_compatible_shape(env: Env) -> None:
    """The answer WordPress Apple Connect clients expect
    (docs/service.md#wordpress-compatible-api)."""
    nonce = "n-" + "a" * 30
    native = await env.native_code(nonce=nonce, name={"firstName": "Maria", "lastName": "Ruiz"})
    response = await env.http.post(
        "/api/apple_connect",
        data={
            "key": env.api_key,
            "code": native["code"],
            "id_token": native["id_token"],
            "nonce": nonce,
            "user": native["user"],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["status", "email", "cookie", "access_token", "id_token", "api_response"]
    assert body["status"] == "ok"
    user = await the_user(env)
    assert body["email"] == user.email
    assert body["cookie"].startswith("acs_")
    assert len(body["cookie"]) >= 40
    claims = body["id_token"]
    assert claims["iss"] == "https://appleid.apple.com"
    assert claims["aud"] == env.settings.app_ids[0]
    assert claims["sub"] == user.sub
    assert {"exp", "iat", "email"} <= set(claims)
    api = body["api_response"]
    assert api["token_type"] == "Bearer"
    assert api["expires_in"] == 3600
    assert api["access_token"] == body["access_token"]
    assert api["refresh_token"]
    assert api["id_token"].count(".") == 2
    assert (user.first_name, user.last_name) == ("Maria", "Ruiz")
    assert user.client_id == env.settings.app_ids[0]

    # The refresh token is stored encrypted, never in clear.
    async with env.service.sessions() as db:
        stored = await db.scalar(select(AppleToken))
    assert stored is not None
    assert api["refresh_token"] not in stored.refresh_token_encrypted
    assert env.service.encryptor.decrypt(stored.refresh_token_encrypted) == api["refresh_token"]


async def test_cookie_endpoints(env: Env) -> None:
    native = await env.native_code()
    connect = await env.http.post(
        "/api/apple_connect/", data={"key": env.api_key, "code": native["code"]}
    )
    cookie = connect.json()["cookie"]
    valid = await env.http.get(
        "/api/validate_auth_cookie", headers={"Authorization": f"Bearer {cookie}"}
    )
    assert valid.json() == {"status": "ok", "valid": True, "user_id": (await the_user(env)).id}
    info = (await env.http.get("/api/get_currentuserinfo/", params={"cookie": cookie})).json()
    assert set(info["user"]) >= {
        "id",
        "email",
        "name",
        "role",
        "is_private_email",
        "created",
        "last_sign_in",
    }
    out = await env.http.post("/api/logout", data={"cookie": cookie})
    assert out.json() == {"status": "ok"}
    after = await env.http.get("/api/validate_auth_cookie", params={"cookie": cookie})
    assert error_of(after) == (401, "invalid_cookie", "cookie")


async def test_code_replay_is_invalid_grant(env: Env) -> None:
    native = await env.native_code()
    first = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, **{"code": native["code"]}}
    )
    assert first.status_code == 200
    replay = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "code": native["code"]}
    )
    assert error_of(replay) == (400, "invalid_grant", None)


async def test_request_auth_then_connect_with_state_checks_the_issued_nonce_once(env: Env) -> None:
    issued = await env.http.get("/api/apple_request_auth", params={"key": env.api_key})
    body = issued.json()
    assert body["status"] == "ok"
    assert len(body["state"]) >= 32
    query = parse_qs(urlsplit(body["url"]).query)
    assert query["state"] == [body["state"]]
    assert query["response_mode"] == ["form_post"]
    form = await env.consent(body["url"], account=LI)
    ok = await env.http.post(
        "/api/apple_connect",
        data={"key": env.api_key, "code": form["code"], "state": body["state"]},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["id_token"]["nonce"] == query["nonce"][0]
    form2 = await env.consent(body["url"], account=LI)
    replay = await env.http.post(
        "/api/apple_connect",
        data={"key": env.api_key, "code": form2["code"], "state": body["state"]},
    )
    assert error_of(replay) == (400, "state_used", "state")


async def test_wrong_state_and_wrong_nonce(env: Env) -> None:
    unknown = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "code": "c" * 20, "state": "s" * 40}
    )
    assert error_of(unknown) == (400, "invalid_state", "state")
    native = await env.native_code(nonce="the-real-nonce-0123456789")
    wrong = await env.http.post(
        "/api/apple_connect",
        data={
            "key": env.api_key,
            "code": native["code"],
            "id_token": native["id_token"],
            "nonce": "another-nonce-0123456789",
        },
    )
    assert error_of(wrong) == (401, "invalid_id_token", None)
    assert await users_count(env) == 0


async def test_api_key_and_parameter_errors(env: Env) -> None:
    no_key = await env.http.post("/api/apple_connect", data={"code": "abc"})
    assert error_of(no_key) == (401, "missing_parameter", "key")
    bad_key = await env.http.post("/api/apple_connect", data={"key": "ack_nope", "code": "abc"})
    assert error_of(bad_key) == (401, "invalid_key", "key")
    no_code = await env.http.post("/api/apple_connect", data={"key": env.api_key})
    assert error_of(no_code) == (400, "missing_parameter", "code")
    long_code = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "code": "c" * 5000}
    )
    assert error_of(long_code) == (400, "invalid_parameter", "code")
    twice = await env.http.post(
        f"/api/apple_connect?key={env.api_key}", data={"key": env.api_key, "code": "abc"}
    )
    assert error_of(twice) == (400, "invalid_parameter", "key")
    redirect = await env.http.post(
        "/api/apple_connect",
        data={"key": env.api_key, "code": "abc", "redirect_uri": "https://evil.example/"},
    )
    assert error_of(redirect) == (400, "invalid_parameter", "redirect_uri")
    bad_user = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "code": "abc", "user": "{not json"}
    )
    assert error_of(bad_user) == (400, "invalid_parameter", "user")
    big = await env.http.post("/api/apple_connect", content=b"x" * 70_000)
    assert error_of(big) == (413, "payload_too_large", None)
    missing = await env.http.get("/api/nothing_here")
    assert error_of(missing) == (404, "not_found", None)
    assert await users_count(env) == 0


async def test_refresh_token_validation_calls_apple_at_most_once_a_day(env: Env) -> None:
    native = await env.native_code()
    first = (
        await env.http.post("/api/apple_connect", data={"key": env.api_key, "code": native["code"]})
    ).json()
    refresh = first["api_response"]["refresh_token"]
    cached = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "refresh_token": refresh}
    )
    assert cached.status_code == 200, cached.text
    assert cached.json()["api_response"] is None  # no call to Apple within the day
    assert cached.json()["id_token"]["sub"] == first["id_token"]["sub"]
    assert cached.json()["cookie"] != first["cookie"]
    async with env.service.sessions() as db:
        await db.execute(update(AppleToken).values(validated_at=utcnow() - timedelta(days=2)))
        await db.commit()
    validated = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "refresh_token": refresh}
    )
    assert validated.status_code == 200, validated.text
    assert validated.json()["api_response"]["access_token"]
    unknown = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "refresh_token": "r" * 40}
    )
    assert error_of(unknown) == (401, "invalid_refresh_token", "refresh_token")


async def test_delete_account_revokes_at_apple_then_deletes(env: Env) -> None:
    native = await env.native_code()
    connect = (
        await env.http.post("/api/apple_connect", data={"key": env.api_key, "code": native["code"]})
    ).json()
    refresh = connect["api_response"]["refresh_token"]
    user = await the_user(env)
    deleted = await env.http.post("/api/delete_account", data={"cookie": connect["cookie"]})
    assert deleted.json() == {
        "status": "ok",
        "deleted": True,
        "revoked_at_apple": [env.settings.app_ids[0]],
        "revoke_failed": [],
        "sessions_ended": 1,
    }
    # The emulator recorded the revocation: the refresh token no longer works at "Apple".
    with pytest.raises(InvalidGrant):
        await env.service.apple.refresh(client_id=env.settings.app_ids[0], refresh_token=refresh)
    assert await users_count(env) == 0
    async with env.service.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(Session)) == 0
        events = await store.audit_events(db=db, sub=user.sub)
    assert events[-1].event == "user.deleted"
    assert json.loads(events[-1].detail)["revoked"] == [env.settings.app_ids[0]]


async def test_two_simultaneous_first_sign_ins_create_one_user(env: Env) -> None:
    first, second = await env.native_code(), await env.native_code()
    results = await asyncio.gather(
        env.http.post("/api/apple_connect", data={"key": env.api_key, "code": first["code"]}),
        env.http.post("/api/apple_connect", data={"key": env.api_key, "code": second["code"]}),
    )
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    assert await users_count(env) == 1


async def test_openapi_describes_the_api(env: Env) -> None:
    doc = (await env.http.get("/openapi.json")).json()
    for path in (
        "/api/apple_request_auth",
        "/api/apple_connect",
        "/api/validate_auth_cookie",
        "/api/get_currentuserinfo",
        "/api/logout",
        "/api/delete_account",
        "/auth/apple/start",
        "/auth/apple/callback",
        "/auth/apple/notifications",
    ):
        assert path in doc["paths"], path
        if path == "/auth/apple/notifications":  # Apple's own calls are not rate-limited
            responses = doc["paths"][path]["post"]["responses"]
            assert set(responses) == {"200", "400", "413", "502", "503"}
            continue
        for operation in doc["paths"][path].values():
            limited = operation["responses"]["429"]
            assert "Retry-After" in limited["headers"], path
            if path.startswith("/api/"):
                error = limited["content"]["application/json"]["schema"]
                assert error["required"] == ["status", "error", "message"]
    assert not [p for p in doc["paths"] if p.endswith("/")]  # the slash variants are aliases
    connect = doc["paths"]["/api/apple_connect"]["post"]
    shape = connect["responses"]["200"]["content"]["application/json"]["schema"]
    assert shape["required"] == [
        "status",
        "email",
        "cookie",
        "access_token",
        "id_token",
        "api_response",
    ]
    params = connect["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    # The API key is a security scheme, not a parameter besides it.
    assert set(params["properties"]) == {
        "code",
        "state",
        "redirect_uri",
        "id_token",
        "nonce",
        "user",
        "refresh_token",
        "client_id",
    }


# --- server-to-server notifications --------------------------------------------------------


async def _signed_in(env: Env, account: str = MARIA) -> tuple[User, str]:
    native = await env.native_code(account=account)
    connect = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "code": native["code"]}
    )
    assert connect.status_code == 200, connect.text
    return await the_user(env, connect.json()["email"]), connect.json()["cookie"]


async def _control(env: Env, path: str, body: dict[str, object]) -> None:
    response = await env.http.post(f"/apple/emulator{path}", json={**body, "wait": True})
    assert response.status_code == 200, response.text


async def test_email_forwarding_notifications(env: Env) -> None:
    native = await env.native_code(account=LI)
    await env.http.post("/api/apple_connect", data={"key": env.api_key, "code": native["code"]})
    # Hide My Email: sign in without sharing the address.
    body = {
        "client_id": env.settings.app_ids[0],
        "response_type": "code id_token",
        "scope": "name email",
        "state": "s" * 20,
        "account": MARIA,
        "share_email": False,
    }
    params = (await env.http.post("/apple/emulator/authorize", json=body)).json()["params"]
    connect = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "code": params["code"]}
    )
    email = connect.json()["email"]
    user = await the_user(env, email)
    assert user.is_private_email
    assert user.email_forwarding
    await _control(env, f"/accounts/{MARIA}/email-forwarding", {"enabled": False})
    assert not (await the_user(env, email)).email_forwarding
    await _control(env, f"/accounts/{MARIA}/email-forwarding", {"enabled": True})
    assert (await the_user(env, email)).email_forwarding
    async with env.service.sessions() as db:
        events = [e.event for e in await store.audit_events(db=db, sub=user.sub)]
    assert "apple.email-disabled" in events
    assert "apple.email-enabled" in events


async def test_consent_revoked_ends_sessions_and_drops_tokens(env: Env) -> None:
    user, cookie = await _signed_in(env)
    await _control(env, f"/accounts/{MARIA}/revoke-consent", {})
    after = await env.http.get("/api/validate_auth_cookie", params={"cookie": cookie})
    assert error_of(after) == (401, "invalid_cookie", "cookie")
    async with env.service.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(AppleToken)) == 0
        assert await db.get(User, user.id) is not None  # the account itself stays


async def test_account_delete_notification_deletes_the_user(env: Env) -> None:
    user, _cookie = await _signed_in(env)
    await _control(env, f"/accounts/{MARIA}/delete-account", {})
    assert await users_count(env) == 0
    async with env.service.sessions() as db:
        events = await store.audit_events(db=db, sub=user.sub)
    assert events[-1].event == "apple.account-deleted"


async def test_duplicate_and_forged_notifications(env: Env) -> None:
    await _signed_in(env)
    await _control(env, f"/accounts/{MARIA}/revoke-consent", {})
    log = (await env.http.get("/apple/emulator/notifications")).json()
    payload = log[-1]["payload"]
    again = await env.http.post("/auth/apple/notifications", json={"payload": payload})
    assert again.json()["duplicate"] is True
    forged = payload.rsplit(".", 1)[0] + ".AAAA"
    bad = await env.http.post("/auth/apple/notifications", json={"payload": forged})
    assert error_of(bad) == (400, "invalid_notification", None)
    junk = await env.http.post("/auth/apple/notifications", content=b"not json")
    assert error_of(junk) == (400, "invalid_notification", None)
    async with env.service.sessions() as db:
        count = await db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.event == "apple.consent-revoked")
        )
    assert count == 1
