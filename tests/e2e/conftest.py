"""Fixtures for the end-to-end tests: an in-process emulator, an HTTP client on it, and a real
HTTP server on loopback that receives the emulator's server-to-server notifications."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from appleconnect.emulator import EmulatorState, create_emulator_app

BASE = "http://apple.emulator.test"


@pytest.fixture
def app() -> Iterator[FastAPI]:
    application = create_emulator_app(notification_retry_delays=(0.05,))
    yield application
    application.state.emulator.close()


@pytest.fixture
def state(app: FastAPI) -> EmulatorState:
    result: EmulatorState = app.state.emulator
    return result


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.bodies.append(self.rfile.read(length))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/notifications", server.bodies  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
