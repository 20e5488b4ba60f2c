"""Server-to-server notifications, received by a real HTTP server and verified with PyJWT."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from emulator_helpers import NotificationServer, jwks_client_keys
from fastapi import FastAPI

from appleconnect.emulator import EmulatorState

Authorize = Callable[..., Any]


async def verify_notification(
    client: httpx.AsyncClient, payload: str, state: EmulatorState
) -> dict[str, Any]:
    jwks = (await client.get("/auth/keys")).json()
    key = jwks_client_keys(jwks)[jwt.get_unverified_header(payload)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        payload,
        key,
        algorithms=["RS256"],
        audience=state.default_team.app_id,
        issuer="https://appleid.apple.com",
        options={"require": ["iss", "aud", "iat", "exp", "jti"]},
    )
    return claims


async def test_each_event_reaches_a_real_endpoint(
    client: httpx.AsyncClient,
    state: EmulatorState,
    authorize: Authorize,
    notification_server: NotificationServer,
) -> None:
    state.set_notification_url(notification_server.url)
    await authorize(share_email=False)
    account = state.find_account("maria.ruiz@example.com")
    assert account is not None
    sub = state.sub_for(account.id, state.default_team.team_id)
    relay = state.relay_email_for(account.id, state.default_team.team_id)

    steps = [
        ("email-forwarding", {"enabled": False}, "email-disabled"),
        ("email-forwarding", {"enabled": True}, "email-enabled"),
        ("revoke-consent", {}, "consent-revoked"),
    ]
    for path, body, expected in steps:
        response = await client.post(
            f"/emulator/accounts/{account.id}/{path}", json={**body, "wait": True}
        )
        assert response.status_code == 200, response.text
        [delivery] = response.json()["notifications"]
        assert delivery["status"] == "delivered"
        assert delivery["type"] == expected
    await authorize()  # consent again, so that deleting the account notifies this team
    response = await client.post(
        "/emulator/accounts/maria.ruiz@example.com/delete-account", json={"wait": True}
    )
    assert response.json()["notifications"][0]["status"] == "delivered"

    received = notification_server.wait_for(4)
    types = []
    jtis = set()
    for item in received:
        assert item.path == "/apple/notifications"
        assert item.content_type == "application/json"
        assert set(item.body) == {"payload"}
        claims = await verify_notification(client, item.body["payload"], state)
        assert isinstance(claims["events"], str)  # Apple sends events as a JSON string
        events = json.loads(claims["events"])
        assert events["sub"] == sub
        assert isinstance(events["event_time"], int)
        types.append(events["type"])
        jtis.add(claims["jti"])
        if events["type"].startswith("email-"):
            assert events["email"] == relay
            assert events["is_private_email"] == "true"
    assert types == ["email-disabled", "email-enabled", "consent-revoked", "account-delete"]
    assert len(jtis) == 4
    assert state.find_account(account.id) is None


async def test_consent_revoked_ends_tokens(
    client: httpx.AsyncClient,
    state: EmulatorState,
    authorize: Authorize,
    exchange: Callable[..., Any],
) -> None:
    tokens = (await exchange(code=(await authorize())["params"]["code"])).json()
    response = await client.post(
        "/emulator/accounts/maria.ruiz@example.com/revoke-consent", json={"wait": True}
    )
    assert response.json()["notifications"][0]["status"] == "no-url"
    refresh = await exchange(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refresh.json()["error"] == "invalid_grant"
    assert "user" in (await authorize())["params"]


async def test_retries_then_logs_delivery(
    app: FastAPI,
    client: httpx.AsyncClient,
    state: EmulatorState,
    authorize: Authorize,
    notification_server: NotificationServer,
) -> None:
    state.set_notification_url(notification_server.url)
    notification_server.fail_next = 2
    await authorize()
    response = await client.post("/emulator/accounts/li.wei@example.com/revoke-consent", json={})
    assert response.json() == {"notifications": []}  # Li never used this team's apps
    response = await client.post("/emulator/accounts/maria.ruiz@example.com/revoke-consent")
    assert response.json()["notifications"][0]["status"] == "pending"  # delivered in background
    await app.state.notifier.drain()  # the delivery runs on this event loop
    assert len(notification_server.wait_for(1)) == 1
    log = (await client.get("/emulator/notifications")).json()
    assert len(log) == 1
    assert log[0]["status"] == "delivered"
    assert [a["status_code"] for a in log[0]["attempts"]] == [500, 500, 200]
    assert (await client.delete("/emulator/notifications")).status_code == 204
    assert (await client.get("/emulator/notifications")).json() == []


async def test_unreachable_endpoint_fails_after_retries(
    client: httpx.AsyncClient, state: EmulatorState, authorize: Authorize
) -> None:
    state.set_notification_url("http://127.0.0.1:9/nothing-listens-here")
    await authorize()
    response = await client.post(
        "/emulator/accounts/maria.ruiz@example.com/revoke-consent", json={"wait": True}
    )
    [delivery] = response.json()["notifications"]
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 3
    assert all(a["error"].startswith("ConnectError") for a in delivery["attempts"])


async def test_in_process_transport_delivery(authorize: Authorize) -> None:
    """The service's sandbox can receive notifications without a socket."""
    from appleconnect.emulator import create_emulator_app

    received: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        return httpx.Response(200)

    app = create_emulator_app(notification_transport=httpx.MockTransport(handler))
    emulator: EmulatorState = app.state.emulator
    emulator.set_notification_url("http://service.test/apple/notifications")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e.test") as c:
        await c.post(
            "/emulator/authorize",
            json={
                "client_id": "com.example.web",
                "redirect_uri": "https://example.com/auth/apple/callback",
                "response_type": "code",
                "account": "li.wei@example.com",
            },
        )
        response = await c.post(
            "/emulator/accounts/li.wei@example.com/revoke-consent", json={"wait": True}
        )
    assert response.json()["notifications"][0]["status"] == "delivered"
    assert len(received) == 1
    assert set(received[0]) == {"payload"}
