"""Every JSON body the service reads is size- and depth-limited: deeply nested JSON (about
2 KB, 1000+ levels) gets one clear 400, never a 500 or a ``RecursionError``, and changes
nothing."""

from __future__ import annotations

import httpx
import pytest
from server_helpers import Env
from sqlalchemy import func, select

from appleconnect.server.jsonbody import MAX_JSON_DEPTH, json_depth
from appleconnect.server.models import AuditEvent, AuthRequest, User

DEEP = b"[" * 1200 + b"]" * 1200  # 2.4 KB


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert body["status"] == "error"
    return response.status_code, body["error"], body["message"]


async def stored_rows(env: Env) -> tuple[int, ...]:
    counts = []
    async with env.service.sessions() as db:
        for table in (User, AuthRequest, AuditEvent):
            counts.append(int(await db.scalar(select(func.count()).select_from(table)) or 0))
    return tuple(counts)


API = "The JSON body"
NOTIFICATION = "The notification body"


@pytest.mark.parametrize(
    ("path", "body", "what"),
    [
        ("/api/apple_connect", b'{"code": "abc", "user": ' + DEEP + b"}", API),
        ("/api/get_currentuserinfo", b'{"cookie": ' + DEEP + b"}", API),
        ("/api/apple_request_auth", DEEP, API),
        ("/api/validate_auth_cookie", b'{"x": {"y": ' + DEEP + b"}}", API),
        ("/auth/apple/notifications", b'{"payload": "x", "more": ' + DEEP + b"}", NOTIFICATION),
    ],
)
async def test_deep_json_is_a_clear_400(env: Env, path: str, body: bytes, what: str) -> None:
    before = await stored_rows(env)
    response = await env.http.post(
        f"{path}?key={env.api_key}", content=body, headers={"content-type": "application/json"}
    )
    assert error_of(response) == (
        400,
        "invalid_body",
        f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.",
    )
    assert await stored_rows(env) == before


async def test_json_within_the_limits_still_works(env: Env) -> None:
    nested = b'{"key": "%s", "x": ' % env.api_key.encode() + b"[" * 10 + b"]" * 10 + b"}"
    response = await env.http.post(
        "/api/apple_request_auth", content=nested, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    broken = await env.http.post(
        "/api/apple_request_auth",
        content=b'{"key": "abc"',
        headers={"content-type": "application/json"},
    )
    assert error_of(broken) == (400, "invalid_body", "The JSON body is not valid JSON.")


def test_depth_ignores_brackets_inside_strings_and_escapes() -> None:
    assert json_depth(b'{"a": "[[[[\\"[[[", "b": [1, {"c": []}]}') == 4
    assert json_depth(b"[" * 5000) == 5000
    assert json_depth(b"") == 0
