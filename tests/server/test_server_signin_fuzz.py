"""Property-based fuzzing (hypothesis) of what a stranger can send to the sign-in endpoints: the
form parameters of ``/auth/apple/callback`` and the parameters of ``/api/apple_connect`` (as a
form or a JSON body), Apple's ``user`` JSON included, around genuine states and tokens.

Invariants, for every input: never a 5xx; only a documented error (status and code, read as
JSON); and nothing stored changes: the row count of every table, and no sign-in request gains a
name. (A genuine state that reaches the one call to Apple is spent by it, as documented; that is
the only change, and it adds or removes no row.) Bounded: a few dozen examples per endpoint and
backend, no deadline."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_helpers import Env, open_env
from sqlalchemy import func, select

from appleconnect.server.models import AuthRequest, Base

CALLBACK_ERRORS = {
    400: {
        "invalid_parameter",
        "invalid_state",
        "state_used",
        "state_expired",
        "invalid_grant",
        "apple_error",
    },
    401: {"invalid_id_token"},
}
API_ERRORS = {
    400: {
        "invalid_parameter",
        "missing_parameter",
        "invalid_body",
        "invalid_state",
        "state_used",
        "state_expired",
        "invalid_grant",
    },
    401: {"invalid_id_token", "invalid_refresh_token"},
    413: {"payload_too_large"},
}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def fuzz_env(tmp_path: Path, database_url: str) -> AsyncIterator[Env]:
    """The sandbox without rate limits or the sign-in budget (the fuzzer is one client)."""
    overrides = {
        "database_url": database_url,
        "rate_limit_per_ip": 0,
        "rate_limit_per_key": 0,
        "signin_budget_per_ip": 0,
    }
    async with open_env(tmp_path / "data", overrides) as env:
        yield env


async def snapshot(env: Env) -> dict[str, int]:
    """Rows per table, and sign-in requests holding a name."""
    async with env.service.sessions() as db:
        counts = {
            table.name: int(await db.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }
        named = select(func.count()).where(AuthRequest.name_code_hash.is_not(None))
        counts["named sign-in requests"] = int(await db.scalar(named) or 0)
    return counts


def b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged_tokens(aud: str) -> st.SearchStrategy[str]:
    claims = st.fixed_dictionaries(
        {
            "iss": st.sampled_from(["https://appleid.apple.com", "https://evil.example"]),
            "aud": st.sampled_from([aud, "com.evil"]),
            "sub": st.text(max_size=40),
            "exp": st.integers(0, 2**40),
            "nonce": st.text(max_size=20),
        }
    )
    header = st.sampled_from([{"alg": "none"}, {"alg": "ES256", "kid": "x"}, {"alg": "HS256"}])
    return st.builds(
        lambda h, c, s: f"{b64(h)}.{b64(c)}.{s}",
        header,
        claims,
        st.text(alphabet="abcXYZ09-_", min_size=1, max_size=20),
    )


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
USER_JSON = st.one_of(
    TEXT,
    st.builds(json.dumps, JSON_VALUES),
    st.builds(
        lambda first, last, email: json.dumps(
            {"name": {"firstName": first, "lastName": last}, "email": email}
        ),
        JSON_VALUES,
        JSON_VALUES,
        JSON_VALUES,
    ),
    # Escaped lone surrogates and control characters in the names.
    st.sampled_from(
        [
            '{"name": {"firstName": "\\ud800", "lastName": "x"}}',
            '{"name": {"firstName": "a\\u0000b"}}',
            '{"name": {"firstName": "' + "A" * 5000 + '"}}',
        ]
    ),
)


def field_values(aud: str) -> st.SearchStrategy[str]:
    return st.one_of(TEXT, forged_tokens(aud), st.sampled_from(["", "x" * 20_000]))


def assert_documented(response: Any, errors: dict[int, set[str]]) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code in errors, (response.status_code, response.text)
    body = response.json()
    assert body["status"] == "error"
    assert body["error"] in errors[response.status_code], body
    assert body["message"].endswith(".")


async def fresh_state(env: Env, kind: str) -> str:
    if kind == "web":
        start = await env.http.get("/auth/apple/start")
        return parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    made = await env.http.post("/api/apple_request_auth", data={"key": env.api_key})
    return str(made.json()["state"])


@FUZZ
@given(data=st.data())
async def test_callback_refuses_bad_input_with_a_documented_error_and_stores_nothing(
    fuzz_env: Env, data: st.DataObject
) -> None:
    env = fuzz_env
    aud = env.settings.client_id
    form: dict[str, Any] = {}
    if data.draw(st.booleans(), label="genuine state"):
        form["state"] = await fresh_state(env, "web")
    else:
        form["state"] = data.draw(field_values(aud), label="state")
    form["code"] = data.draw(st.one_of(field_values(aud), st.just("c.0.abc")), label="code")
    for name, values in (("id_token", forged_tokens(aud)), ("user", USER_JSON)):
        if data.draw(st.booleans(), label=f"with {name}"):
            form[name] = data.draw(values, label=name)
    extra = data.draw(st.dictionaries(st.sampled_from(["error", "x", "state"]), TEXT, max_size=2))
    body = list(form.items()) + list(extra.items())
    before = await snapshot(env)
    response = await env.http.post(
        "/auth/apple/callback", data=dict(body), headers={"accept": "application/json"}
    )
    if response.status_code == 303:  # a cancel with a genuine state: back to next
        assert "signin=cancelled" in response.headers["location"]
    else:
        assert_documented(response, CALLBACK_ERRORS)
    assert await snapshot(env) == before


@FUZZ
@given(data=st.data())
async def test_apple_connect_refuses_bad_input_with_a_documented_error_and_stores_nothing(
    fuzz_env: Env, data: st.DataObject
) -> None:
    env = fuzz_env
    aud = env.settings.app_ids[0]
    values: dict[str, Any] = {"key": env.api_key}
    values["code"] = data.draw(field_values(aud), label="code")
    if data.draw(st.booleans(), label="with state"):
        genuine = data.draw(st.booleans(), label="genuine state")
        values["state"] = await fresh_state(env, "api") if genuine else data.draw(TEXT)
    for name, strategy in (
        ("id_token", forged_tokens(aud)),
        ("user", USER_JSON),
        ("nonce", TEXT),
        ("client_id", st.sampled_from([aud, env.settings.client_id, "com.evil", ""])),
        ("refresh_token", TEXT),
    ):
        if data.draw(st.booleans(), label=f"with {name}"):
            values[name] = data.draw(strategy, label=name)
    as_json = data.draw(st.booleans(), label="as JSON")
    before = await snapshot(env)
    if as_json:
        response = await env.http.post("/api/apple_connect", json=values)
    else:
        response = await env.http.post("/api/apple_connect", data=values)
    assert_documented(response, API_ERRORS)
    assert await snapshot(env) == before
