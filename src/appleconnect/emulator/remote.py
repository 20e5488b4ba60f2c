"""Calls to a running emulator's control API over HTTP, for the command line."""

from __future__ import annotations

from typing import Any

import httpx

MAX_ANSWER_BYTES = 64 * 1024


class RemoteError(Exception):
    """Raised when the emulator cannot be reached or refuses the call; the message says why."""


def transfer_app(
    url: str,
    *,
    app_id: str,
    to_team: str,
    services_ids: list[str] | None = None,
    at: float | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """``POST /emulator/transfers`` on the emulator at ``url``; the transfer as it answers it."""
    body: dict[str, Any] = {"app_id": app_id, "to_team": to_team}
    if services_ids is not None:
        body["services_ids"] = services_ids
    if at is not None:
        body["at"] = at
    return call_control(url, "POST", "/emulator/transfers", body, expect=201, what="the transfer")


def call_control(
    url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    expect: int | tuple[int, ...] = 200,
    what: str = "the call",
    params: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """One control-API call to the emulator at ``url``; its JSON object (``{}`` for a 204)."""
    endpoint = f"{url.rstrip('/')}{path}"
    expected = (expect,) if isinstance(expect, int) else expect
    try:
        response = httpx.request(method, endpoint, json=body, params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RemoteError(f"cannot reach the emulator at {url}: {exc}") from exc
    if len(response.content) > MAX_ANSWER_BYTES:
        raise RemoteError(f"{endpoint} answered more than {MAX_ANSWER_BYTES} bytes")
    if response.status_code == 204 and 204 in expected:
        return {}
    try:
        answer = response.json()
    except ValueError as exc:
        raise RemoteError(f"{endpoint} answered HTTP {response.status_code}, not JSON") from exc
    if response.status_code not in expected or not isinstance(answer, dict):
        detail = answer.get("detail") if isinstance(answer, dict) else None
        raise RemoteError(f"the emulator refused {what}: {detail or response.status_code}")
    return answer
