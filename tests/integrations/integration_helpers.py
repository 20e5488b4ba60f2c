"""Helpers shared by the integration tests (a module of its own, not conftest, so that test
files can import it without clashing with the conftest of another folder)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

ORIGIN = "https://testserver"
CALLBACK = f"{ORIGIN}/auth/apple/callback"
NOTIFICATIONS = f"{ORIGIN}/auth/apple/notifications"


def failure_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The reasons of the sign-in failures logged by the adapters (``reason: detail``)."""
    return [
        record.getMessage().split(": ")[1]
        for record in caplog.records
        if record.levelno == logging.WARNING and "Sign in with Apple failed" in record.getMessage()
    ]


@contextmanager
def serve_on_loopback(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 and a free port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def account_json(account: Any) -> dict[str, object]:
    """What the test apps' ``/me`` answers for the signed-in ``AppleAccount``."""
    return {
        "sub": account.sub,
        "email": account.email,
        "private": account.is_private_email,
        "name": account.full_name,
        "forwarding": account.email_forwarding,
    }
