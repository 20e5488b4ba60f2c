"""Hostile input against the emulator: deeply nested JSON (control API and client-secret headers),
file modes of the state directory, and a forged ``Host`` header on the discovery document."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from emulator_helpers import BASE, SecretFactory

from appleconnect.emulator import EmulatorState, create_emulator_app

Authorize = Callable[..., Any]
Exchange = Callable[..., Any]
TOO_DEEP = "The request body is nested more than 32 levels deep."


def nested(depth: int, kind: str = "array") -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(("depth", "kind"), [(1000, "array"), (5000, "array"), (1200, "object")])
async def test_deeply_nested_control_body_is_a_clear_400(
    client: httpx.AsyncClient, state: EmulatorState, depth: int, kind: str
) -> None:
    before = [state.account_json(a) for a in state.list_accounts()]
    for path in ("/emulator/accounts", "/emulator/faults", "/emulator/authorize"):
        body = nested(depth, kind) if kind == "array" else '{"email":' + nested(depth, kind) + "}"
        response = await client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, (path, response.text)
        assert response.json() == {"detail": TOO_DEEP}
    assert [state.account_json(a) for a in state.list_accounts()] == before
    assert (await client.get("/emulator/faults")).json() == []


async def test_nesting_at_the_limit_and_brackets_in_strings_are_accepted(
    client: httpx.AsyncClient,
) -> None:
    at_limit = '{"boolean_claims": "boolean", "x": ' + nested(31) + "}"
    response = await client.put(
        "/emulator/settings", content=at_limit, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"boolean_claims": "boolean"}
    one_more = '{"x": ' + nested(32) + "}"
    refused = await client.put(
        "/emulator/settings", content=one_more, headers={"content-type": "application/json"}
    )
    assert refused.json() == {"detail": TOO_DEEP}
    brackets = await client.post(
        "/emulator/accounts",
        json={"email": "brackets@example.com", "first_name": "[" * 40 + '\\"{' * 3},
    )
    assert brackets.status_code == 201
    assert brackets.json()["name"]["firstName"] == "[" * 40 + '\\"{' * 3


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_deeply_nested_client_secret_header_is_invalid_client(
    authorize: Authorize, exchange: Exchange, make_secret: SecretFactory
) -> None:
    code = (await authorize())["params"]["code"]
    _, payload, _signature = make_secret().split(".")
    header = '{"alg":"ES256","kid":' + nested(1000) + "}"
    response = await exchange(code=code, client_secret=f"{_b64(header.encode())}.{payload}.x")
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "The client secret header is nested more than 32 levels deep.",
    }
    assert (await exchange(code=code)).status_code == 200  # the refusal did not spend the code


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))
    }


async def test_state_directory_is_private_whatever_the_umask(
    tmp_path: Path, umask_022: None
) -> None:
    state_dir = tmp_path / "apple-state"
    app = create_emulator_app(state_dir=state_dir, base_url=BASE)
    state: EmulatorState = app.state.emulator
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        result = await c.post(
            "/emulator/authorize",
            json={
                "client_id": "com.example.app",
                "response_type": "code",
                "account": "li.wei@example.com",
            },
        )
        code = result.json()["params"]["code"]
        team = state.default_team
        await c.post("/emulator/teams", json={"team_id": "TEAMB12345"})
        exchanged = await c.post(
            "/auth/token",
            data={
                "client_id": team.app_id,
                "client_secret": jwt.encode(
                    {
                        "iss": team.team_id,
                        "iat": int(state.now()),
                        "exp": int(state.now()) + 600,
                        "aud": "https://appleid.apple.com",
                        "sub": team.app_id,
                    },
                    team.private_key_pem,
                    algorithm="ES256",
                    headers={"kid": team.key_id},
                ),
                "grant_type": "authorization_code",
                "code": code,
            },
        )
        assert exchanged.status_code == 200
        modes = _modes(state_dir)
        assert "emulator.sqlite3-wal" in modes  # written while the database is open
    state.close()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert "credentials.json" in modes
    assert f"AuthKey_{team.key_id}.p8" in modes
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}


def test_an_existing_world_readable_database_is_made_private(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    database = tmp_path / "emulator.sqlite3"
    sqlite3.connect(database).close()
    database.chmod(0o644)
    app = create_emulator_app(state_dir=tmp_path)
    app.state.emulator.close()
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


async def test_discovery_urls_ignore_a_forged_host_header() -> None:
    app = create_emulator_app(base_url="https://apple.example.test/prefix")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://evil.example") as c:
        doc = (
            await c.get(
                "/.well-known/openid-configuration",
                headers={"host": "attacker.example", "x-forwarded-host": "attacker.example"},
            )
        ).json()
    urls = {k: v for k, v in doc.items() if k.endswith(("_endpoint", "_uri"))}
    assert urls == {
        "authorization_endpoint": "https://apple.example.test/prefix/auth/authorize",
        "token_endpoint": "https://apple.example.test/prefix/auth/token",
        "revocation_endpoint": "https://apple.example.test/prefix/auth/revoke",
        "jwks_uri": "https://apple.example.test/prefix/auth/keys",
    }
    assert "attacker" not in json.dumps(doc)


@pytest.mark.parametrize("bad", ["apple.example.test", "ftp://x.test", "http://x.test/?a=1", ""])
def test_base_url_must_be_an_absolute_http_url(bad: str) -> None:
    with pytest.raises(ValueError, match="base_url must be an absolute http"):
        create_emulator_app(base_url=bad)
