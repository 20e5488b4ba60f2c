"""Fixtures for the emulator's tests: an in-process emulator, an HTTP client on it, client
secrets minted with PyJWT (never with the project's library), and a real HTTP server that
receives server-to-server notifications."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from emulator_helpers import BASE, WEB_REDIRECT, NotificationServer, Received, SecretFactory
from fastapi import FastAPI

from appleconnect.emulator import EmulatorState, create_emulator_app


@pytest.fixture
def app() -> Iterator[FastAPI]:
    """A fresh in-memory emulator with fast notification retries, reached at ``BASE``."""
    application = create_emulator_app(notification_retry_delays=(0.05, 0.1), base_url=BASE)
    yield application
    application.state.emulator.close()


@pytest.fixture
def state(app: FastAPI) -> EmulatorState:
    """The emulator's state object (``app.state.emulator``)."""
    result: EmulatorState = app.state.emulator
    return result


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the emulator in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c
    await app.state.notifier.drain()


@pytest.fixture
def make_secret(state: EmulatorState) -> SecretFactory:
    """Mint a client secret with PyJWT (ES256, raw R||S), like any client of Apple would."""

    def factory(
        client_id: str | None = None,
        *,
        team_id: str | None = None,
        key_id: str | None = None,
        pem: str | None = None,
        **overrides: Any,
    ) -> str:
        team = state.default_team
        now = int(state.now())
        claims: dict[str, Any] = {
            "iss": team_id or team.team_id,
            "iat": now,
            "exp": now + 3600,
            "aud": "https://appleid.apple.com",
            "sub": client_id or team.services_id,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return jwt.encode(
            claims,
            pem or team.private_key_pem,
            algorithm="ES256",
            headers={"kid": key_id or team.key_id},
        )

    return factory


@pytest.fixture
def notification_server() -> Iterator[NotificationServer]:
    """Start a threaded ``http.server`` on an ephemeral port; stop it after the test."""
    server_state = NotificationServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            if server_state.fail_next > 0:
                server_state.fail_next -= 1
                self.send_response(500)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            server_state.received.append(
                Received(self.path, self.headers.get("content-type", ""), json.loads(raw))
            )
            server_state.event.set()
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}/apple/notifications"
    yield server_state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def authorize(client: httpx.AsyncClient) -> Callable[..., Any]:
    """Run the consent step through ``POST /emulator/authorize``; return its JSON."""

    async def run(account: str = "maria.ruiz@example.com", **params: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_id": "com.example.web",
            "redirect_uri": WEB_REDIRECT,
            "response_type": "code id_token",
            "response_mode": "form_post",
            "scope": "name email",
            "state": "st-1",
            "nonce": "n-1",
            "account": account,
        }
        body.update(params)
        body = {k: v for k, v in body.items() if v is not None}
        response = await client.post("/emulator/authorize", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    return run


@pytest.fixture
def exchange(client: httpx.AsyncClient, make_secret: SecretFactory) -> Callable[..., Any]:
    """POST a form to ``/auth/token`` with a fresh PyJWT secret; return the response."""

    async def run(**form: str | None) -> httpx.Response:
        data: dict[str, str | None] = {
            "client_id": "com.example.web",
            "grant_type": "authorization_code",
            "redirect_uri": WEB_REDIRECT,
        }
        data.update(form)
        if "client_secret" not in form:
            data["client_secret"] = make_secret(data["client_id"])
        return await client.post(
            "/auth/token", data={k: v for k, v in data.items() if v is not None}
        )

    return run
