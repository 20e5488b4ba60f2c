"""Fault injection: make one of Apple's endpoints slow, fail, or misbehave on demand.

A fault applies to one endpoint (``token``, ``revoke``, ``keys``, ``authorize``,
``usermigrationinfo``, ``discovery``, ``button``) for the next ``count`` requests, or to a
``probability`` fraction of them, and is one of:

- ``latency``: wait ``latency_ms`` then answer normally;
- ``status``: answer HTTP ``status`` (a 5xx) with a short text body;
- ``malformed_json``: answer 200 with a truncated JSON document;
- ``close``: start the answer, then drop the connection (the client sees a protocol error);
- ``apple_error``: answer 400 with Apple's JSON ``{"error", "error_description"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import threading
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

FaultKind = Literal["latency", "status", "malformed_json", "close", "apple_error"]
ENDPOINTS: dict[str, str] = {
    "/auth/authorize": "authorize",
    "/auth/token": "token",
    "/auth/revoke": "revoke",
    "/auth/keys": "keys",
    "/auth/usermigrationinfo": "usermigrationinfo",
    "/.well-known/openid-configuration": "discovery",
    "/appleid/button": "button",
    "/appleid/button/left": "button",
    "/appleid/button/logo": "button",
}
KINDS = ("latency", "status", "malformed_json", "close", "apple_error")
MAX_FAULTS = 100
MAX_LATENCY_MS = 60_000


class FaultError(ValueError):
    """Raised when a fault definition is invalid; the message says which field."""


@dataclass
class Fault:
    """One injected fault rule."""

    id: str
    endpoint: str
    kind: FaultKind
    count: int | None = None
    probability: float | None = None
    latency_ms: int = 0
    status: int = 503
    error: str = "invalid_grant"
    error_description: str = ""

    def as_json(self) -> dict[str, Any]:
        """The rule as the control API shows it (``count`` is what remains)."""
        return asdict(self)


def parse_fault(data: Any) -> Fault:
    """Build a :class:`Fault` from the control API's JSON, checking every field."""
    if not isinstance(data, dict):
        raise FaultError("A fault is a JSON object.")
    endpoint = data.get("endpoint")
    if endpoint not in set(ENDPOINTS.values()):
        raise FaultError(f"endpoint must be one of {sorted(set(ENDPOINTS.values()))}.")
    kind = data.get("kind")
    if kind not in KINDS:
        raise FaultError(f"kind must be one of {list(KINDS)}.")
    count, probability = _how_often(data)
    fault = Fault(
        id=secrets.token_hex(6),
        endpoint=endpoint,
        kind=kind,
        count=count,
        probability=probability,
    )
    if kind == "latency":
        fault.latency_ms = _latency(data)
    elif kind == "status":
        status = data.get("status", 503)
        if not isinstance(status, int) or not 500 <= status <= 599:
            raise FaultError("status must be an HTTP 5xx code.")
        fault.status = status
    elif kind == "apple_error":
        fault.error, fault.error_description = _apple_error(data)
    return fault


def _how_often(data: dict[str, Any]) -> tuple[int | None, float | None]:
    count, probability = data.get("count"), data.get("probability")
    if count is None and probability is None:
        count = 1
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise FaultError("count must be a positive integer.")
    if count is not None and count > 1_000_000:
        raise FaultError("count must be at most 1000000.")
    if probability is not None and (
        not isinstance(probability, int | float)
        or isinstance(probability, bool)
        or not 0 < probability <= 1
    ):
        raise FaultError("probability must be a number in (0, 1].")
    return count, float(probability) if probability is not None else None


def _latency(data: dict[str, Any]) -> int:
    latency = data.get("latency_ms")
    if not isinstance(latency, int) or isinstance(latency, bool):
        raise FaultError("latency_ms must be an integer.")
    if not 0 <= latency <= MAX_LATENCY_MS:
        raise FaultError(f"latency_ms must be between 0 and {MAX_LATENCY_MS}.")
    return latency


def _apple_error(data: dict[str, Any]) -> tuple[str, str]:
    error = data.get("error")
    description = data.get("error_description", "")
    if not isinstance(error, str) or not error or len(error) > 64:
        raise FaultError("error must be Apple's error code, e.g. invalid_grant.")
    if not isinstance(description, str) or len(description) > 512:
        raise FaultError("error_description must be a string of at most 512 characters.")
    return error, description


class FaultInjector:
    """The active fault rules, consulted by :class:`FaultMiddleware` on every request."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)  # noqa: S311 - test randomness, not security

    def add(self, fault: Fault) -> Fault:
        """Activate a fault rule."""
        with self._lock:
            if len(self._faults) >= MAX_FAULTS:
                raise FaultError(f"At most {MAX_FAULTS} faults at a time.")
            self._faults.append(fault)
        return fault

    def list(self) -> list[Fault]:
        """The active rules."""
        with self._lock:
            return list(self._faults)

    def remove(self, fault_id: str) -> bool:
        """Deactivate one rule; False if unknown."""
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        """Deactivate every rule."""
        with self._lock:
            self._faults.clear()

    def pick(self, endpoint: str) -> Fault | None:
        """The fault that applies to this request, if any (spending one of its ``count``)."""
        with self._lock:
            for fault in self._faults:
                if fault.endpoint != endpoint:
                    continue
                if fault.probability is not None and self._random.random() >= fault.probability:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                return fault
        return None


class FaultMiddleware:
    """ASGI middleware that applies the injector's faults to Apple's endpoints."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        endpoint = ENDPOINTS.get(path.rstrip("/") or "/")
        fault = self.injector.pick(endpoint) if endpoint else None
        if fault is None:
            await self.app(scope, receive, send)
            return
        log.info("fault %s (%s) applied to %s", fault.id, fault.kind, endpoint)
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_ms / 1000)
            await self.app(scope, receive, send)
        elif fault.kind == "status":
            await _send(send, fault.status, b"Service Unavailable", "text/plain")
        elif fault.kind == "malformed_json":
            await _send(send, 200, b'{"access_token": "a', "application/json;charset=UTF-8")
        elif fault.kind == "apple_error":
            body = json.dumps({"error": fault.error, "error_description": fault.error_description})
            await _send(send, 400, body.encode(), "application/json;charset=UTF-8")
        else:
            # Read the request first: closing a socket with unread input makes the kernel send
            # a reset, and the client would see that instead of a truncated response.
            while (await receive()).get("more_body", False):
                pass
            # Promise a body, send part of it, then fail: uvicorn closes the socket mid-response,
            # and an in-process httpx transport re-raises this very exception, so both kinds of
            # client see httpx.RemoteProtocolError.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            raise httpx.RemoteProtocolError("Emulated fault: the server closed the connection.")


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
