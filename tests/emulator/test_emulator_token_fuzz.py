"""Property-based fuzzing of the emulator's token endpoint form (hypothesis).

Invariants, for any body: the answer is 200 only for a genuine exchange; otherwise HTTP 400 with
exactly Apple's documented error JSON ``{"error", "error_description"}``, never a 5xx and never an
exception; and a refused request changes nothing stored (the SQLite state is byte-for-byte the
same)."""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import jwt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appleconnect.emulator import EmulatorState, create_emulator_app

APPLE_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
}
REDIRECT = "https://example.com/auth/apple/callback"
BASE = "http://emulator.test"
FORM = "application/x-www-form-urlencoded"
FIELDS = (
    "grant_type",
    "client_id",
    "client_secret",
    "code",
    "redirect_uri",
    "refresh_token",
    "scope",
)


def _records(database: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(database) as db:
        return sorted(db.execute("SELECT kind, key, value FROM records").fetchall())


def _secret(state: EmulatorState, **claims: Any) -> str:
    team = state.default_team
    now = int(state.now())
    body = {
        "iss": team.team_id,
        "iat": now,
        "exp": now + 3600,
        "aud": "https://appleid.apple.com",
        "sub": team.services_id,
        **claims,
    }
    return jwt.encode(body, team.private_key_pem, algorithm="ES256", headers={"kid": team.key_id})


def _values(state: EmulatorState, code: str, refresh: str) -> st.SearchStrategy[str]:
    team = state.default_team
    genuine = [
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "user.migration",
        team.services_id,
        team.app_id,
        REDIRECT,
        code,
        refresh,
        _secret(state),
        _secret(state, sub=team.app_id),
        _secret(state, exp=int(state.now()) - 10),
    ]
    mangled = st.sampled_from(genuine).flatmap(
        lambda v: st.integers(0, max(len(v) - 1, 0)).map(lambda i: v[:i] + v[i + 1 :])
    )
    return st.one_of(
        st.sampled_from(genuine),
        mangled,
        st.text(max_size=80),
        st.text(alphabet='[]{}"\\.=&%+', max_size=300),
    )


def _bodies(state: EmulatorState, code: str, refresh: str) -> st.SearchStrategy[bytes]:
    names = st.one_of(st.sampled_from(FIELDS), st.text(min_size=1, max_size=20))
    pairs = st.lists(st.tuples(names, _values(state, code, refresh)), max_size=9)
    encoded = pairs.map(lambda p: urllib.parse.urlencode(p).encode())
    return st.one_of(encoded, st.binary(max_size=300))


class _Client:
    """Synchronous POSTs to the in-process emulator (hypothesis drives plain functions)."""

    def __init__(self, app: Any) -> None:
        self._app = app

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        async def run() -> httpx.Response:
            transport = httpx.ASGITransport(app=self._app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
                return await c.post(path, **kwargs)

        return asyncio.run(run())


def test_token_endpoint_answers_only_apples_errors_and_changes_nothing(tmp_path: Path) -> None:
    app = create_emulator_app(state_dir=tmp_path / "state", base_url=BASE)
    state: EmulatorState = app.state.emulator
    database = tmp_path / "state" / "emulator.sqlite3"
    client = _Client(app)
    team = state.default_team
    account = state.list_accounts()[0]

    def fresh_code() -> str:
        return state.issue_code(
            client_id=team.services_id,
            account_id=account.id,
            redirect_uri=REDIRECT,
            nonce=None,
            scopes=["email"],
            first=False,
        ).code

    first = client.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": team.services_id,
            "client_secret": _secret(state),
            "code": fresh_code(),
            "redirect_uri": REDIRECT,
        },
    )
    refresh = first.json()["refresh_token"]
    code = fresh_code()
    content_types = st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=utf-8",
        ]
    )

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=_bodies(state, code, refresh), content_type=content_types)
    def check(body: bytes, content_type: str) -> None:
        before = _records(database)
        response = client.post("/auth/token", content=body, headers={"content-type": content_type})
        assert response.status_code in (200, 400), (body, response.text)
        if response.status_code == 200:
            assert set(response.json()) >= {"access_token", "token_type", "expires_in"}
            return
        answer = response.json()
        assert set(answer) == {"error", "error_description"}, answer
        assert answer["error"] in APPLE_ERRORS, answer
        assert response.headers["cache-control"] == "no-store"
        assert _records(database) == before, (body, answer)

    check()
    state.close()
