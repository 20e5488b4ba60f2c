"""The control API: accounts, keys, teams, faults, clock; and the discovery document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from emulator_helpers import verify_apple_jwt

from appleconnect.emulator import EmulatorState, create_emulator_app

Authorize = Callable[..., Any]
Exchange = Callable[..., Any]


async def test_discovery_document(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/.well-known/openid-configuration")).json()
    assert doc["issuer"] == "https://appleid.apple.com"
    assert doc["authorization_endpoint"] == "http://emulator.test/auth/authorize"
    assert doc["response_types_supported"] == ["code"]
    assert doc["response_modes_supported"] == ["query", "fragment", "form_post"]
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_post"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "transfer_sub" in doc["claims_supported"]


async def test_jwks_and_rotation_grace(
    client: httpx.AsyncClient, authorize: Authorize, state: EmulatorState
) -> None:
    [key] = (await client.get("/auth/keys")).json()["keys"]
    assert set(key) == {"kty", "kid", "use", "alg", "n", "e"}
    assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "sig", "RS256", "AQAB")
    old_token = (await authorize())["params"]["id_token"]
    rotated = await client.post("/emulator/keys/rotate", json={"grace_seconds": 3600})
    new_kid = rotated.json()["kid"]
    kids = [k["kid"] for k in (await client.get("/auth/keys")).json()["keys"]]
    assert kids == [new_kid, key["kid"]]
    new_token = (await authorize())["params"]["id_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    # Both verify while the old key is in its grace period.
    await verify_apple_jwt(client, old_token, "com.example.web")
    await verify_apple_jwt(client, new_token, "com.example.web")
    await client.post("/emulator/clock/advance", json={"seconds": 3601})
    kids = [k["kid"] for k in (await client.get("/auth/keys")).json()["keys"]]
    assert kids == [new_kid]


async def test_accounts_crud(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/emulator/accounts")).json()
    assert [a["email"] for a in listed] == [
        "maria.ruiz@example.com",
        "li.wei@example.com",
        "sam.okafor@example.com",
    ]
    assert {"id", "email", "name"} <= set(listed[0])
    created = await client.post(
        "/emulator/accounts",
        json={"email": "new@example.net", "first_name": "New", "last_name": "User"},
    )
    assert created.status_code == 201
    assert created.json()["name"] == {"firstName": "New", "lastName": "User"}
    duplicate = await client.post("/emulator/accounts", json={"email": "NEW@example.net"})
    assert duplicate.status_code == 400
    assert duplicate.json() == {"detail": "An Apple ID with email new@example.net already exists."}
    assert (await client.delete(f"/emulator/accounts/{created.json()['id']}")).status_code == 204
    missing = await client.get(f"/emulator/accounts/{created.json()['id']}")
    assert missing.status_code == 404
    bad = await client.post("/emulator/accounts", content=b"[1]")
    assert bad.json() == {"detail": "The request body must be a JSON object."}
    huge = await client.post("/emulator/accounts", content=b"{" + b" " * 70_000 + b"}")
    assert huge.status_code == 413


async def test_emulator_authorize_errors_and_cancel(
    client: httpx.AsyncClient, authorize: Authorize
) -> None:
    cancelled = await authorize(cancel=True)
    assert cancelled == {
        "redirect_uri": "https://example.com/auth/apple/callback",
        "response_mode": "form_post",
        "params": {"error": "user_cancelled_authorize", "state": "st-1"},
    }
    response = await client.post(
        "/emulator/authorize", json={"client_id": "com.example.web", "account": "x"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "unauthorized_client",
        "error_description": "The parameter redirect_uri is missing.",
    }
    unknown = await client.post(
        "/emulator/authorize",
        json={
            "client_id": "com.example.web",
            "redirect_uri": "https://example.com/auth/apple/callback",
            "response_type": "code",
            "account": "nobody@example.com",
        },
    )
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "No Apple ID 'nobody@example.com'."}


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ({"kind": "status", "status": 503}, lambda r: r.status_code == 503),
        (
            {"kind": "apple_error", "error": "invalid_grant", "error_description": "boom"},
            lambda r: (
                r.status_code == 400
                and r.json() == {"error": "invalid_grant", "error_description": "boom"}
            ),
        ),
        ({"kind": "malformed_json"}, lambda r: r.status_code == 200 and r.text.endswith('"a')),
    ],
)
async def test_faults_apply_to_the_next_n_requests(
    client: httpx.AsyncClient, fault: dict[str, Any], check: Callable[[httpx.Response], bool]
) -> None:
    added = await client.post("/emulator/faults", json={"endpoint": "keys", "count": 2, **fault})
    assert added.status_code == 201
    assert check(await client.get("/auth/keys"))
    assert check(await client.get("/auth/keys"))
    assert (await client.get("/auth/keys")).status_code == 200
    assert (await client.get("/emulator/faults")).json() == []


async def test_fault_connection_close_and_latency(client: httpx.AsyncClient) -> None:
    await client.post("/emulator/faults", json={"endpoint": "token", "kind": "close"})
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/auth/token", data={"grant_type": "refresh_token"})
    await client.post(
        "/emulator/faults", json={"endpoint": "keys", "kind": "latency", "latency_ms": 50}
    )
    assert (await client.get("/auth/keys")).status_code == 200


async def test_fault_probability_and_validation() -> None:
    app = create_emulator_app(fault_seed=7)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e.test") as c:
        added = await c.post(
            "/emulator/faults",
            json={"endpoint": "discovery", "kind": "status", "probability": 0.5},
        )
        fault_id = added.json()["id"]
        statuses = [
            (await c.get("/.well-known/openid-configuration")).status_code for _ in range(40)
        ]
        assert 5 <= statuses.count(503) <= 35
        assert set(statuses) == {200, 503}
        assert (await c.delete(f"/emulator/faults/{fault_id}")).status_code == 204
        invalid = await c.post(
            "/emulator/faults", json={"endpoint": "token", "kind": "status", "status": 200}
        )
        assert invalid.json() == {"detail": "status must be an HTTP 5xx code."}
        unknown = await c.post("/emulator/faults", json={"endpoint": "userinfo", "kind": "close"})
        assert unknown.status_code == 400
        assert unknown.json()["detail"].startswith("endpoint must be one of")


async def test_clock(client: httpx.AsyncClient, state: EmulatorState) -> None:
    before = state.now()
    response = await client.put("/emulator/clock", json={"offset_seconds": 7200})
    assert response.json()["offset_seconds"] == 7200
    assert state.now() - before >= 7199
    bad = await client.put("/emulator/clock", json={"offset_seconds": "soon"})
    assert bad.json() == {"detail": "offset_seconds must be a number."}


async def test_control_api_can_be_off() -> None:
    app = create_emulator_app(control_api=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e.test") as c:
        assert (await c.get("/emulator/accounts")).status_code == 404
        assert (await c.get("/auth/keys")).status_code == 200


async def test_custom_issuer_and_extra_clients() -> None:
    app = create_emulator_app(issuer="https://apple.emulator.test")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e.test") as c:
        doc = (await c.get("/.well-known/openid-configuration")).json()
        assert doc["issuer"] == "https://apple.emulator.test"
        added = await c.post(
            "/emulator/clients",
            json={"client_id": "com.example.second", "redirect_uris": ["http://127.0.0.1:3000/cb"]},
        )
        assert added.status_code == 201
        assert added.json()["redirect_uris"] == ["http://127.0.0.1:3000/cb"]
        more = await c.post(
            "/emulator/clients/com.example.second/redirect-uris",
            json={"uri": "http://localhost:3000/cb#frag"},
        )
        assert more.json()["detail"].endswith("must not contain a fragment (#).")
        result = await c.post(
            "/emulator/authorize",
            json={
                "client_id": "com.example.second",
                "redirect_uri": "http://127.0.0.1:3000/cb",
                "response_type": "code id_token",
                "response_mode": "fragment",
                "account": "li.wei@example.com",
            },
        )
        token = result.json()["params"]["id_token"]
        assert jwt.decode(token, options={"verify_signature": False})["iss"] == (
            "https://apple.emulator.test"
        )
