"""State that survives a restart, credentials.json, and the real server (``serve``)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from appleconnect.emulator import create_emulator_app, is_loopback

REDIRECT = "https://example.com/auth/apple/callback"


def secret_from_credentials(creds: dict[str, Any], now: int) -> str:
    pem = creds["private_key_pem"]
    return jwt.encode(
        {
            "iss": creds["team_id"],
            "iat": now,
            "exp": now + 600,
            "aud": "https://appleid.apple.com",
            "sub": creds["services_id"],
        },
        pem,
        algorithm="ES256",
        headers={"kid": str(creds["key_id"])},
    )


def read_credentials(state_dir: Path) -> dict[str, Any]:
    """Load credentials.json and check the key file it points to."""
    creds: dict[str, Any] = json.loads((state_dir / "credentials.json").read_text())
    assert creds["redirect_uris"][0] == "http://localhost:8000/auth/apple/callback"
    assert creds["accounts"][0]["email"] == "maria.ruiz@example.com"
    key_file = Path(creds["private_key_path"])
    assert key_file.name == f"AuthKey_{creds['key_id']}.p8"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    return creds


async def test_state_survives_restart(tmp_path: Path) -> None:
    app = create_emulator_app(state_dir=tmp_path)
    creds = read_credentials(tmp_path)
    assert creds["team_id"] == app.state.emulator.default_team.team_id
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://e.test"
    ) as c:
        result = await c.post(
            "/emulator/authorize",
            json={
                "client_id": "com.example.web",
                "redirect_uri": REDIRECT,
                "response_type": "code",
                "response_mode": "form_post",
                "scope": "email name",
                "account": "li.wei@example.com",
            },
        )
        code = result.json()["params"]["code"]
        kid = (await c.get("/auth/keys")).json()["keys"][0]["kid"]
    app.state.emulator.close()

    again = create_emulator_app(state_dir=tmp_path)
    assert again.state.emulator.default_team == app.state.emulator.default_team
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=again), base_url="http://e.test"
    ) as c:
        assert (await c.get("/auth/keys")).json()["keys"][0]["kid"] == kid
        now = int(time.time())
        tokens = await c.post(
            "/auth/token",
            data={
                "client_id": "com.example.web",
                "client_secret": secret_from_credentials(creds, now),
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
            },
        )
        assert tokens.status_code == 200, tokens.text
        second = await c.post(
            "/emulator/authorize",
            json={
                "client_id": "com.example.web",
                "redirect_uri": REDIRECT,
                "response_type": "code",
                "response_mode": "form_post",
                "scope": "email name",
                "account": "li.wei@example.com",
            },
        )
        assert "user" not in second.json()["params"]  # the consent persisted
    again.state.emulator.close()


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("localhost")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.com")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_runs_a_real_server(tmp_path: Path) -> None:
    port = free_port()
    code = (
        "from pathlib import Path; from appleconnect.emulator import serve; "
        f"serve(host='127.0.0.1', port={port}, state_dir=Path({str(tmp_path)!r}), "
        "issuer=None, control_api=None)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(7)]
        banner = "".join(lines)
        assert f"base URL:          http://127.0.0.1:{port}" in banner
        match = re.search(r"credentials.json:\s+(\S+)", banner)
        assert match is not None
        assert match.group(1) == str(tmp_path / "credentials.json")
        assert f"control API:       http://127.0.0.1:{port}/emulator" in banner
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                keys = httpx.get(f"{base}/auth/keys", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert keys.json()["keys"][0]["alg"] == "RS256"
        creds = json.loads((tmp_path / "credentials.json").read_text())
        assert creds["base_url"] == base
        httpx.post(f"{base}/emulator/faults", json={"endpoint": "token", "kind": "close"})
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(f"{base}/auth/token", data={"grant_type": "x"}, timeout=5)
        after = httpx.post(f"{base}/auth/token", data={"grant_type": "x"}, timeout=5)
        assert after.json()["error"] == "unsupported_grant_type"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
