"""Helpers shared by the emulator's tests (a uniquely named module, importable from the tests)."""

from __future__ import annotations

import html.parser
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

BASE = "http://emulator.test"
WEB_REDIRECT = "https://example.com/auth/apple/callback"
SecretFactory = Callable[..., str]


def parse_forms(page: str) -> list[dict[str, Any]]:
    """Every ``<form>`` in a page: action, method and fields (first value of radios checked)."""

    class Parser(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.forms: list[dict[str, Any]] = []
            self.labels: list[str] = []
            self.buttons: list[dict[str, str]] = []
            self._button: dict[str, str] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag == "form":
                self.forms.append(
                    {"action": a.get("action"), "method": a.get("method"), "fields": {}, "ids": {}}
                )
            elif tag == "input" and self.forms:
                form = self.forms[-1]
                name, kind = a.get("name"), a.get("type", "text")
                if a.get("id"):
                    form["ids"][a["id"]] = a
                if name is None:
                    return
                if kind == "radio":
                    if "checked" in a:
                        form["fields"][name] = a.get("value", "")
                else:
                    form["fields"].setdefault(name, a.get("value", ""))
            elif tag == "label":
                self.labels.append(a.get("for", ""))
            elif tag == "button":
                self._button = {"name": a.get("name", ""), "value": a.get("value", ""), "text": ""}

        def handle_data(self, data: str) -> None:
            if self._button is not None:
                self._button["text"] += data

        def handle_endtag(self, tag: str) -> None:
            if tag == "button" and self._button is not None:
                self._button["text"] = self._button["text"].strip()
                self.buttons.append(self._button)
                if self.forms:
                    self.forms[-1].setdefault("buttons", []).append(self._button)
                self._button = None

    parser = Parser()
    parser.feed(page)
    for form in parser.forms:
        form["labels"] = parser.labels
    return parser.forms


@dataclass
class Received:
    """One POST received by the notification server."""

    path: str
    content_type: str
    body: dict[str, Any]


@dataclass
class NotificationServer:
    """A real HTTP server on 127.0.0.1 that records what Apple (the emulator) POSTs to it."""

    url: str
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    event: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until ``count`` notifications have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.received)} of {count} notifications arrived")
            self.event.wait(0.05)
            self.event.clear()
        return self.received


def jwks_client_keys(jwks: dict[str, Any]) -> dict[str, Any]:
    """PyJWT key objects from a JWKS document, by kid."""
    return {k["kid"]: jwt.PyJWK(k).key for k in jwks["keys"]}


async def verify_apple_jwt(
    client: httpx.AsyncClient, token: str, audience: str, **options: Any
) -> dict[str, Any]:
    """Verify a JWT the emulator signed, with PyJWT against ``/auth/keys`` (RS256 only)."""
    jwks = (await client.get("/auth/keys")).json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwks_client_keys(jwks)[kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=audience,
        issuer="https://appleid.apple.com",
        options={"require": ["iss", "aud", "exp", "iat", "sub"], **options},
    )
    return claims


async def request_migration_token(
    client: httpx.AsyncClient, client_id: str, secret: str
) -> httpx.Response:
    """``client_credentials`` with ``scope=user.migration`` (the migration endpoint's bearer)."""
    return await client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "user.migration",
            "client_id": client_id,
            "client_secret": secret,
        },
    )
