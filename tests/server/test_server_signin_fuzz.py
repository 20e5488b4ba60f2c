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
from hypothesis import HealthCheck, example, given, settings
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
    max_examples=50,
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


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
# What Apple's values look like: printable ASCII without spaces (codes), plain words (names).
CODE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80)
WORD = st.text(st.characters(whitelist_categories=("L",)), min_size=1, max_size=20)
SUB = "001234.0123456789abcdef0123456789abcdef.0123"
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
PLANTED = json.dumps({"name": {"firstName": "Mallory", "lastName": "Planted"}})
USER_JSON = st.one_of(
    st.builds(lambda a, b: json.dumps({"name": {"firstName": a, "lastName": b}}), WORD, WORD),
    TEXT,
    st.builds(json.dumps, JSON_VALUES),
    st.builds(
        lambda first, last, email: json.dumps(
            {"name": {"firstName": first, "lastName": last}, "email": email}
        ),
        WORD | JSON_VALUES,
        WORD | JSON_VALUES,
        JSON_VALUES,
    ),
    # Escaped lone surrogates, control characters, oversized names.
    st.sampled_from(
        [
            '{"name": {"firstName": "\\ud800", "lastName": "x"}}',
            '{"name": {"firstName": "a\\u0000b"}}',
            '{"name": {"firstName": "' + "A" * 5000 + '"}}',
        ]
    ),
)


def forged_tokens(aud: str) -> st.SearchStrategy[str]:
    """JWT-shaped tokens nobody signed: Apple's issuer or another, this service's audience or
    another, a victim's ``sub`` or anything."""
    claims = st.fixed_dictionaries(
        {
            "iss": st.sampled_from(["https://appleid.apple.com", "https://evil.example"]),
            "aud": st.sampled_from([aud, "com.evil"]),
            "sub": st.just(SUB) | CODE,
            "exp": st.integers(0, 2**40),
            "nonce": st.text(max_size=20),
        }
    )
    header = st.sampled_from([{"alg": "none"}, {"alg": "ES256", "kid": "x"}, {"alg": "HS256"}])
    return st.builds(
        lambda h, c, sig: f"{b64(h)}.{b64(c)}.{sig}",
        header,
        claims,
        st.text(alphabet="abcXYZ09-_", min_size=1, max_size=20),
    )


FORGED = "forged"  # stands for :func:`forged_token` with the service's own client id


def forged_token(aud: str) -> str:
    """The attacker's token: ``alg: none``, Apple's issuer, the audience, the victim's sub."""
    claims = {"iss": "https://appleid.apple.com", "aud": aud, "sub": SUB}
    return f"{b64({'alg': 'none'})}.{b64(claims)}.c2ln"


def anything() -> st.SearchStrategy[str]:
    return st.one_of(CODE, TEXT, st.sampled_from(["", "x" * 20_000]))


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


WEB_AUD, APP_AUD = "com.example.web", "com.example.app"  # audiences of other services


@FUZZ
@given(
    genuine_state=st.booleans(),
    state=anything(),
    code=CODE | anything(),
    id_token=st.none() | forged_tokens(WEB_AUD) | anything(),
    user=st.none() | USER_JSON,
    extra=st.dictionaries(st.sampled_from(["error", "x", "response_mode"]), TEXT, max_size=2),
)
@example(  # the planting attack of issue 9
    genuine_state=True,
    state="",
    code="c.0.bogus",
    id_token=FORGED,
    user=PLANTED,
    extra={},
)
async def test_callback_refuses_bad_input_with_a_documented_error_and_stores_nothing(
    fuzz_env: Env,
    genuine_state: bool,
    state: str,
    code: str,
    id_token: str | None,
    user: str | None,
    extra: dict[str, str],
) -> None:
    env = fuzz_env
    form = {**extra, "state": await fresh_state(env, "web") if genuine_state else state}
    form["code"] = code
    if id_token is not None:
        form["id_token"] = forged_token(env.settings.client_id) if id_token == FORGED else id_token
    if user is not None:
        form["user"] = user
    before = await snapshot(env)
    response = await env.http.post(
        "/auth/apple/callback", data=form, headers={"accept": "application/json"}
    )
    if response.status_code == 303:  # a cancel with a genuine state: back to next
        assert "signin=cancelled" in response.headers["location"]
    else:
        assert_documented(response, CALLBACK_ERRORS)
    assert await snapshot(env) == before


@FUZZ
@given(
    state=st.none() | st.just("genuine") | TEXT,
    code=CODE | anything(),
    id_token=st.none() | forged_tokens(APP_AUD) | anything(),
    user=st.none() | USER_JSON,
    optional=st.dictionaries(
        st.sampled_from(["nonce", "client_id", "refresh_token", "redirect_uri"]),
        st.sampled_from([APP_AUD, WEB_AUD, "com.evil", "", "https://evil.example/"]) | TEXT,
        max_size=3,
    ),
    as_json=st.booleans(),
)
@example(  # the same attack through the API, with and without a state
    state=None,
    code="c.0.bogus",
    id_token=FORGED,
    user=PLANTED,
    optional={},
    as_json=False,
)
@example(
    state="genuine",
    code="c.0.bogus",
    id_token=FORGED,
    user=PLANTED,
    optional={},
    as_json=True,
)
async def test_apple_connect_refuses_bad_input_with_a_documented_error_and_stores_nothing(
    fuzz_env: Env,
    state: str | None,
    code: str,
    id_token: str | None,
    user: str | None,
    optional: dict[str, str],
    as_json: bool,
) -> None:
    env = fuzz_env
    values = {**optional, "key": env.api_key, "code": code}
    if state is not None:
        values["state"] = await fresh_state(env, "api") if state == "genuine" else state
    if id_token is not None:
        audience = env.settings.client_id if state else env.settings.app_ids[0]
        values["id_token"] = forged_token(audience) if id_token == FORGED else id_token
    if user is not None:
        values["user"] = user
    before = await snapshot(env)
    if as_json:
        response = await env.http.post("/api/apple_connect", json=values)
    else:
        response = await env.http.post("/api/apple_connect", data=values)
    assert_documented(response, API_ERRORS)
    assert await snapshot(env) == before
