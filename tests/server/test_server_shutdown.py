"""Graceful shutdown of a real ``appleconnect serve`` process on SIGTERM.

While a sign-in waits on a slow Apple (the emulator's token endpoint delayed by a fault), a
welcome mail is being delivered to a slow SMTP server and a sign-in result is to be forwarded to
a slow receiver, the process gets SIGTERM: the sign-in is answered as usual, the mail being sent
is sent and recorded, the forward is delivered, the mail queued during shutdown is either sent
or still queued (and sent after a restart), the process exits 0, and no mail goes out twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from server_helpers import free_port, wait_for
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from appleconnect.server.db import session_factory
from appleconnect.server.models import OutboxMail

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
pytestmark = pytest.mark.slow

SMTP_DELAY = 2.0
APPLE_DELAY_MS = 4000
FORWARD_DELAY = 1.5


class SlowInbox:
    """An SMTP server that takes ``SMTP_DELAY`` seconds to accept each message."""

    def __init__(self) -> None:
        self.receiving = threading.Event()
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.receiving.set()
        await asyncio.sleep(SMTP_DELAY)
        self.messages.append(envelope)
        return "250 OK"

    def recipients(self) -> list[str]:
        return sorted(to for m in self.messages for to in m.rcpt_tos)


class SlowReceiver(BaseHTTPRequestHandler):
    """Takes ``FORWARD_DELAY`` seconds to answer a forwarded sign-in; keeps what it got."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        time.sleep(FORWARD_DELAY)
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def smtp() -> Iterator[tuple[SlowInbox, int]]:
    inbox, port = SlowInbox(), free_port()
    controller = aiosmtpd_controller.Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def receiver() -> Iterator[str]:
    SlowReceiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/signed-in"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def apple(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The emulator as a process of its own: the service calls "Apple" over real HTTP."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    state_dir = tmp_path / "emulator"
    args = ["emulator", "--port", str(port), "--state-dir", str(state_dir)]
    with (tmp_path / "emulator.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "appleconnect.cli", *args], stdout=log, stderr=log
        )
    try:
        wait_for(base + "/auth/keys", process, timeout=60)
        yield base, json.loads((state_dir / "credentials.json").read_text())
    finally:
        process.terminate()
        process.wait(20)


def start(
    tmp_path: Path, run: str, apple: tuple[str, dict[str, Any]], smtp_port: int, forward: str
) -> tuple[Any, str]:
    """``appleconnect serve`` with the emulator as Apple, a real SMTP server and a forward."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    apple_url, creds = apple
    env = {
        **os.environ,
        "APPLECONNECT_MODE": "sandbox",
        "APPLECONNECT_PUBLIC_URL": url,
        "APPLECONNECT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
        "APPLECONNECT_APPLE_BASE_URL": apple_url,
        "APPLECONNECT_TEAM_ID": creds["team_id"],
        "APPLECONNECT_KEY_ID": creds["key_id"],
        "APPLECONNECT_PRIVATE_KEY": creds["private_key_pem"],
        "APPLECONNECT_CLIENT_ID": creds["services_id"],
        "APPLECONNECT_APP_IDS": creds["app_id"],
        "APPLECONNECT_SMTP_HOST": "127.0.0.1",
        "APPLECONNECT_SMTP_PORT": str(smtp_port),
        "APPLECONNECT_SMTP_SECURITY": "none",
        "APPLECONNECT_SMTP_TIMEOUT": "5",
        "APPLECONNECT_WELCOME_EMAIL": "true",
        "APPLECONNECT_MAIL_FROM": "hello@example.com",
        "APPLECONNECT_FORWARD_URIS": forward,
    }
    args = ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    with (tmp_path / f"{run}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "appleconnect.cli", *args],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for(url + "/healthz", process, timeout=60)
    return process, url


def native_code(apple: tuple[str, dict[str, Any]], account: str) -> str:
    """A code for the native app, from the emulator's control API (no browser)."""
    apple_url, creds = apple
    answer = httpx.post(
        f"{apple_url}/emulator/authorize",
        json={
            "client_id": creds["app_id"],
            "response_type": "code id_token",
            "scope": "name email",
            "state": secrets.token_urlsafe(16),
            "account": account,
        },
    )
    assert answer.status_code == 200, answer.text
    code: str = answer.json()["params"]["code"]
    return code


def outbox(tmp_path: Path) -> dict[str, str]:
    async def read() -> dict[str, str]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
        try:
            async with session_factory(engine)() as db:
                mails = (await db.scalars(select(OutboxMail))).all()
                return {m.to_address: m.status for m in mails}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def stop_with_sigterm(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("no exit within 40 s of SIGTERM:\n" + log.read_text()) from None
    assert process.returncode == 0, log.read_text()


def test_sigterm_finishes_requests_and_background_work(
    tmp_path: Path,
    apple: tuple[str, dict[str, Any]],
    smtp: tuple[SlowInbox, int],
    receiver: str,
) -> None:
    inbox, smtp_port = smtp
    process, url = start(tmp_path, "first", apple, smtp_port, receiver)
    key = (tmp_path / "data" / "demo-api-key.txt").read_text().strip()
    http = httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30)
    try:
        maria = native_code(apple, "maria.ruiz@example.com")
        first = http.post("/api/apple_connect", data={"code": maria})
        assert first.status_code == 200, first.text
        assert inbox.receiving.wait(15), "Maria's welcome mail was never sent"

        delayed = {"endpoint": "token", "kind": "latency", "latency_ms": APPLE_DELAY_MS}
        assert httpx.post(f"{apple[0]}/emulator/faults", json=delayed).status_code == 201
        code = native_code(apple, "li.wei@example.com")
        answers: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                http.post("/api/apple_connect", data={"code": code, "redirect_uri": receiver})
            )
        )
        slow.start()
        time.sleep(1.0)  # Li Wei's sign-in now waits on Apple; Maria's mail is being sent
        assert not answers
        assert not inbox.messages
        stop_with_sigterm(process, tmp_path / "first.log")
        slow.join(10)

        # The request in flight was answered as usual.
        [answer] = answers
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["email"]) == ("ok", "li.wei@example.com")
        # The mail being sent was sent and recorded; the forward was delivered.
        assert "maria.ruiz@example.com" in inbox.recipients()
        assert [r["email"] for r in SlowReceiver.received] == ["li.wei@example.com"]
        mails = outbox(tmp_path)
        assert mails["maria.ruiz@example.com"] == "sent"
        # Li Wei's mail, queued during shutdown: sent, or still queued for the next start.
        assert mails["li.wei@example.com"] in {"sent", "pending"}
        log = (tmp_path / "first.log").read_text()
        assert "Waiting for connections to close" in log
        assert "Traceback" not in log
    finally:
        http.close()
        if process.poll() is None:
            process.kill()
            process.wait()

    # The next start sends whatever was left, and nothing twice.
    process, url = start(tmp_path, "second", apple, smtp_port, receiver)
    try:
        deadline = time.monotonic() + 30
        while outbox(tmp_path)["li.wei@example.com"] != "sent" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert outbox(tmp_path) == {
            "maria.ruiz@example.com": "sent",
            "li.wei@example.com": "sent",
        }
        assert inbox.recipients() == ["li.wei@example.com", "maria.ruiz@example.com"]
        stop_with_sigterm(process, tmp_path / "second.log")  # idle: exits 0 at once
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
