"""Helpers for the service tests: the sandbox environment a test talks to."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from appleconnect.sandbox import Sandbox, build_sandbox_app
from appleconnect.server import store
from appleconnect.server.models import OutboxMail, utcnow

PUBLIC_URL = "http://127.0.0.1:8000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until ``url`` answers below 500, failing if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@dataclass
class Env:
    """A running sandbox and an HTTP client into it (no sockets)."""

    sandbox: Sandbox
    http: httpx.AsyncClient
    api_key: str

    @property
    def emulator(self) -> Any:
        return self.sandbox.emulator_app.state.emulator

    @property
    def notifier(self) -> Any:
        return self.sandbox.emulator_app.state.notifier

    @property
    def settings(self) -> Any:
        """The settings in force now (the admin panel replaces them; start-up ones stay in
        ``sandbox.settings``)."""
        return self.service.settings

    @property
    def service(self) -> Any:
        return self.sandbox.service_app.state.container

    async def consent(
        self,
        authorize_url: str,
        *,
        account: str = "maria.ruiz@example.com",
        name: Any = None,
        cancel: bool = False,
        share_email: bool = True,
    ) -> dict[str, str]:
        """Play the user on the emulator's consent page; returns what Apple would POST."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        body: dict[str, Any] = {**query, "account": account, "share_email": share_email}
        if name is not None:
            body["name"] = name
        if cancel:
            body = {**query, "cancel": True}
        response = await self.http.post("/apple/emulator/authorize", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        return {k: v for k, v in data["params"].items() if v is not None}

    async def native_code(
        self, *, account: str = "maria.ruiz@example.com", nonce: str | None = None, name: Any = None
    ) -> dict[str, str]:
        """What the native SDK gives an app: code, id_token, and the user JSON the first time."""
        body: dict[str, Any] = {
            "client_id": self.settings.app_ids[0],
            "response_type": "code id_token",
            "scope": "name email",
            "state": secrets.token_urlsafe(16),
            "account": account,
        }
        if nonce is not None:
            body["nonce"] = nonce
        if name is not None:
            body["name"] = name
        response = await self.http.post("/apple/emulator/authorize", json=body)
        assert response.status_code == 200, response.text
        return {k: v for k, v in response.json()["params"].items() if v is not None}

    async def web_sign_in(
        self, *, next_path: str = "/", account: str = "maria.ruiz@example.com", name: Any = None
    ) -> httpx.Response:
        """The whole browser flow; returns the final 303 that sets the cookie."""
        start = await self.http.get("/auth/apple/start", params={"next": next_path})
        assert start.status_code == 303, start.text
        form = await self.consent(start.headers["location"], account=account, name=name)
        callback = await self.http.post("/auth/apple/callback", data=form)
        assert callback.status_code == 303, callback.text
        finish = await self.http.get(callback.headers["location"])
        assert finish.status_code == 303, finish.text
        return finish


@asynccontextmanager
async def open_env(data_dir: Path, overrides: Mapping[str, Any]) -> AsyncIterator[Env]:
    """A sandbox on ``data_dir`` with settings ``overrides``, started, with an API key."""
    sandbox = build_sandbox_app(data_dir, public_url=PUBLIC_URL, overrides=overrides)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(sandbox.app.router.lifespan_context(sandbox.app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=sandbox.transport, base_url=PUBLIC_URL)
        )
        service = sandbox.service_app.state.container
        async with service.sessions() as db:
            key = await store.create_api_key(db=db, name="tests")
            await db.commit()
        yield Env(sandbox=sandbox, http=http, api_key=key)


async def seed_user(db: Any, sub: str, email: str, first_name: str | None = None) -> Any:
    """Create a verified user with ``sub`` and ``email`` directly in the database (the caller
    commits); returns the user."""
    identity = store.Identity(
        sub=sub,
        email=email,
        email_verified=True,
        is_private_email=False,
        transfer_sub=None,
        claims={},
    )
    user, _created = await db.run_sync(
        lambda s: store.upsert_user(
            conn=s.connection(),
            identity=identity,
            client_id="com.example.web",
            default_role="subscriber",
            first_name=first_name,
            last_name=None,
        )
    )
    return user


class Inbox:
    """An SMTP server's handler (aiosmtpd) that records every message it accepted."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"

    def recipients(self) -> list[str]:
        return sorted(r for m in self.messages for r in m.rcpt_tos)


def pending_mail(to: str, body: str = "Hello") -> OutboxMail:
    """A welcome mail waiting in the outbox for its first attempt."""
    return OutboxMail(
        to_address=to,
        subject="Welcome",
        body=body,
        created_at=utcnow(),
        status="pending",
        attempts=0,
    )
