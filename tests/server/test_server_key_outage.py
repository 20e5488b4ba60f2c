"""Apple rotates its signing key while ``/auth/keys`` fails (issue 9, item 3), against the
service: sign-ins (web callback and ``apple_connect``) and notifications answer 503
``apple_unavailable`` with ``Retry-After``, never 401 ``invalid_id_token`` or 400
``invalid_notification`` (so Apple delivers the notification again), and all recover within
seconds once the keys answer. The emulator rotates the key and injects the faults; the key
cache's intervals are set low through the service's settings, so nothing waits a minute."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import Env, open_env

MARIA = "maria.ruiz@example.com"
BACKOFF = 1  # keys_failure_backoff, seconds


@pytest.fixture
async def env(tmp_path: Path, database_url: str) -> AsyncIterator[Env]:
    overrides = {
        "database_url": database_url,
        # The service fetched the keys moments ago; Apple has rotated since.
        "keys_refetch_interval": 0,
        "keys_failure_backoff": BACKOFF,
    }
    async with open_env(tmp_path / "data", overrides) as environment:
        yield environment


async def emulator(env: Env, method: str, path: str, body: Any = None) -> httpx.Response:
    response = await env.http.request(method, f"/apple/emulator{path}", json=body)
    assert response.status_code < 300, response.text
    return response


def assert_unavailable(response: httpx.Response, *, json_body: bool = True) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == str(BACKOFF)
    if json_body:
        assert response.json()["error"] == "apple_unavailable"
    else:
        assert "signing keys could not be fetched" in response.text


async def rotate_during_an_outage(env: Env) -> str:
    kid: str = (await emulator(env, "POST", "/keys/rotate", {})).json()["kid"]
    fault = {"endpoint": "keys", "kind": "status", "status": 503, "probability": 1}
    await emulator(env, "POST", "/faults", fault)
    return kid


async def until_ok(send: Any, limit: float) -> tuple[httpx.Response, float]:
    """Repeat ``send()`` until it is not a 503; return the answer and the seconds it took."""
    started = time.monotonic()
    while True:
        response: httpx.Response = await send()
        if response.status_code != 503 or time.monotonic() - started > limit:
            return response, time.monotonic() - started
        await asyncio.sleep(0.1)


async def test_notification_answers_503_then_applies_once_keys_are_back(env: Env) -> None:
    finish = await env.web_sign_in(account=MARIA)  # fetches the keys
    cookie = finish.cookies[env.settings.cookie_name]
    await rotate_during_an_outage(env)
    await emulator(env, "POST", f"/accounts/{MARIA}/revoke-consent", {"wait": True})
    delivery = (await emulator(env, "GET", "/notifications")).json()[-1]
    # Apple was told to retry (every attempt answered 503), not that the event was forged.
    assert delivery["attempts"]
    assert {a["status_code"] for a in delivery["attempts"]} == {503}
    body = {"payload": delivery["payload"]}
    answer = await env.http.post("/auth/apple/notifications", json=body)
    assert_unavailable(answer)
    validate = await env.http.get("/api/validate_auth_cookie", params={"cookie": cookie})
    assert validate.status_code == 200  # nothing was applied yet

    await emulator(env, "DELETE", "/faults")
    answer, waited = await until_ok(
        lambda: env.http.post("/auth/apple/notifications", json=body), 10
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "ok", "event": "consent-revoked", "duplicate": False}
    assert waited < BACKOFF + 2
    validate = await env.http.get("/api/validate_auth_cookie", params={"cookie": cookie})
    assert validate.status_code == 401


async def test_apple_connect_answers_503_and_the_code_stays_usable(env: Env) -> None:
    await env.web_sign_in(account=MARIA)
    await rotate_during_an_outage(env)
    native = await env.native_code(account=MARIA)
    form = {"key": env.api_key, "code": native["code"], "id_token": native["id_token"]}
    assert_unavailable(await env.http.post("/api/apple_connect", data=form))

    await emulator(env, "DELETE", "/faults")
    answer, waited = await until_ok(lambda: env.http.post("/api/apple_connect", data=form), 10)
    # The app's token was checked before the code was spent: the same code still signs in.
    assert answer.status_code == 200, answer.text
    assert answer.json()["cookie"].startswith("acs_")
    assert waited < BACKOFF + 2


async def test_web_callback_answers_503_with_retry_after(env: Env) -> None:
    await env.web_sign_in(account=MARIA)
    await rotate_during_an_outage(env)
    start = await env.http.get("/auth/apple/start", params={"next": "/"})
    form = await env.consent(start.headers["location"], account=MARIA)
    callback = await env.http.post("/auth/apple/callback", data=form)
    assert_unavailable(callback, json_body=False)
    assert callback.headers["content-type"].startswith("text/html")

    await emulator(env, "DELETE", "/faults")
    await asyncio.sleep(BACKOFF)
    finish = await env.web_sign_in(account=MARIA)  # a new sign-in works at once
    assert finish.status_code == 303
