"""Apple rotates its signing key while ``/auth/keys`` fails or is slow (issue 9, item 3).

Against the emulator: its control API rotates the key and injects faults on ``/auth/keys``. A
token signed with the new key is then undecidable, so the library raises ``KeysUnavailable``
(an ``AppleUnavailable``), never ``InvalidIdentityToken`` / ``InvalidNotification``; once the
keys answer again, the same token verifies after ``failure_backoff``, not a refetch interval
later. The async client runs in-process; the sync client talks to the emulator under uvicorn on
loopback, so that a slow ``/auth/keys`` really times out.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from appleconnect import (
    AppleClient,
    AppleKeys,
    AppleUnavailable,
    AsyncAppleClient,
    ClientSecret,
    InvalidIdentityToken,
    InvalidNotification,
    KeysUnavailable,
    Notification,
    aparse_notification,
    parse_authorization_response,
)
from appleconnect.emulator import EmulatorState
from appletest import Clock

BASE = "http://apple.emulator.test"
REDIRECT = "https://example.com/auth/apple/callback"


def secret_for(state: EmulatorState) -> ClientSecret:
    team = state.default_team
    return ClientSecret(team.team_id, team.key_id, team.services_id, team.private_key_pem)


def consent_body(url: str, account: str) -> dict[str, Any]:
    return {**dict(parse_qsl(urlsplit(url).query)), "account": account}


async def code_and_token(
    apple: AsyncAppleClient, http: httpx.AsyncClient, account: str
) -> tuple[str, str]:
    """Consent through the control API, exchange the code; return (id_token, access_token)."""
    url = apple.authorization_url(REDIRECT, state=secrets.token_urlsafe(16))
    response = await http.post("/emulator/authorize", json=consent_body(url, account))
    assert response.status_code == 200, response.text
    callback = parse_authorization_response(response.json()["params"])
    assert callback.code is not None
    tokens = await apple.exchange_code(callback.code, redirect_uri=REDIRECT)
    assert tokens.id_token is not None
    return tokens.id_token, tokens.access_token


async def test_async_sign_in_and_notification_during_a_key_outage(
    http: httpx.AsyncClient, state: EmulatorState, receiver: tuple[str, list[bytes]]
) -> None:
    clock = Clock()
    keys = AppleKeys(base_url=BASE, async_http_client=http, clock=clock, failure_backoff=2)
    team = state.default_team
    apple = AsyncAppleClient(
        team.services_id, secret_for(state), base_url=BASE, http_client=http, keys=keys
    )
    audiences = [team.services_id, team.app_id]
    first, _ = await code_and_token(apple, http, "li.wei@example.com")
    assert (await apple.verify_identity_token(first)).sub
    old_kid = keys.kids

    rotated = await http.post("/emulator/keys/rotate", json={"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    assert new_kid not in old_kid
    fault = await http.post(
        "/emulator/faults", json={"endpoint": "keys", "kind": "status", "status": 503, "count": 50}
    )
    assert fault.status_code == 201, fault.text
    clock.now += 61  # past the refetch interval of the last successful fetch

    id_token, access_token = await code_and_token(apple, http, "li.wei@example.com")
    with pytest.raises(KeysUnavailable) as info:
        await apple.verify_identity_token(id_token, access_token=access_token)
    assert info.value.kid == new_kid
    assert not isinstance(info.value, InvalidIdentityToken)

    # A consent revocation arrives, signed with the new key: undecidable, so Apple must retry.
    url, bodies = receiver
    state.set_notification_url(url)
    account = next(a for a in state.list_accounts() if a.email == "li.wei@example.com")
    revoked = await http.post(f"/emulator/accounts/{account.id}/revoke-consent", json={})
    assert revoked.status_code == 200, revoked.text
    for _ in range(100):
        if bodies:
            break
        await asyncio.sleep(0.05)
    assert bodies, "the emulator sent no notification"
    with pytest.raises(KeysUnavailable) as note_error:
        await apple_notification(bodies[0], keys, audiences)
    assert not isinstance(note_error.value, InvalidNotification)
    fetches = keys.fetch_count
    clock.now += 1  # within the backoff: no new fetch
    with pytest.raises(AppleUnavailable):
        await apple_notification(bodies[0], keys, audiences)
    assert keys.fetch_count == fetches

    # Apple's keys answer again: a couple of seconds later both verify.
    assert (await http.delete("/emulator/faults")).status_code == 204
    clock.now += 1
    note = await apple_notification(bodies[0], keys, audiences)
    assert note.type == Notification.CONSENT_REVOKED
    identity = await apple.verify_identity_token(id_token, access_token=access_token)
    assert identity.audience == team.services_id
    assert new_kid in keys.kids
    await apple.aclose()


async def apple_notification(body: bytes, keys: AppleKeys, audiences: list[str]) -> Notification:
    return await aparse_notification(body, keys, audiences=audiences)


# -- the sync client against the emulator on a real socket -----------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def emulator_url(app: FastAPI) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


def test_sync_sign_in_while_the_keys_endpoint_is_slow(
    emulator_url: str, state: EmulatorState
) -> None:
    clock = Clock()
    team = state.default_team
    with (
        httpx.Client(base_url=emulator_url, timeout=5) as control,
        httpx.Client(timeout=0.3) as keys_http,
    ):
        keys = AppleKeys(
            base_url=emulator_url, http_client=keys_http, clock=clock, failure_backoff=2
        )
        apple = AppleClient(team.services_id, secret_for(state), base_url=emulator_url, keys=keys)

        def id_token() -> str:
            url = apple.authorization_url(REDIRECT, state=secrets.token_urlsafe(16))
            response = control.post(
                "/emulator/authorize", json=consent_body(url, "li.wei@example.com")
            )
            assert response.status_code == 200, response.text
            code = response.json()["params"]["code"]
            token = apple.exchange_code(code, redirect_uri=REDIRECT).id_token
            assert token is not None
            return token

        assert apple.verify_identity_token(id_token()).sub
        new_kid = control.post("/emulator/keys/rotate", json={}).json()["kid"]
        slow = {"endpoint": "keys", "kind": "latency", "latency_ms": 1500, "probability": 1}
        assert control.post("/emulator/faults", json=slow).status_code == 201
        clock.now += 61
        token = id_token()
        with pytest.raises(KeysUnavailable) as info:
            apple.verify_identity_token(token)
        assert info.value.kid == new_kid
        assert "timed out" in str(info.value).lower()
        assert control.delete("/emulator/faults").status_code == 204
        clock.now += 2
        assert apple.verify_identity_token(token).sub
        apple.close()
