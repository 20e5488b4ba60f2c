"""The first-login name attaches only to a ``sub`` proven by a verified id_token: a stranger who
posts a name with a forged token cannot name someone else's account, and a name that came with
a sign-in that failed for a transient reason stays with that one sign-in request (its state).
SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from server_helpers import PUBLIC_URL, Env
from sqlalchemy import func, select

from appleconnect.emulator import Fault
from appleconnect.server.models import PendingName, User

VICTIM = "maria.ruiz@example.com"
PLANTED = {"name": {"firstName": "Mallory", "lastName": "Planted"}}
UNNAMED = {"firstName": "", "lastName": ""}


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_token(sub: str, aud: str) -> str:
    """An id_token anyone can write: ``alg: none``, the victim's ``sub``, a junk signature."""
    now = int(time.time())
    claims = {"iss": "https://appleid.apple.com", "aud": aud, "sub": sub, "iat": now}
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64({**claims, "exp": now + 600}) + ".c2ln"


def victim_sub(env: Env) -> str:
    account = env.emulator.find_account(VICTIM)
    return str(env.emulator.sub_for(account.id, env.emulator.default_team.team_id))


async def stored_user(env: Env) -> User | None:
    async with env.service.sessions() as db:
        return await db.scalar(select(User).where(User.email == VICTIM))


async def pending_names(env: Env) -> int:
    async with env.service.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(PendingName)) or 0)


async def plant_through_the_callback(env: Env) -> httpx.Response:
    """A stranger, in a browser of their own: a fresh state, a bogus code, an unsigned token
    with the victim's ``sub``, and a ``user`` name."""
    async with httpx.AsyncClient(transport=env.sandbox.transport, base_url=PUBLIC_URL) as stranger:
        start = await stranger.get("/auth/apple/start")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        response = await stranger.post(
            "/auth/apple/callback",
            data={
                "state": state,
                "code": "c" + "0" * 40 + ".0.abcd.forged",
                "id_token": unsigned_token(victim_sub(env), env.settings.client_id),
                "user": json.dumps(PLANTED),
            },
        )
    return response


def assert_refused_as_forged(response: httpx.Response) -> None:
    """Refused before the code is spent, because the token is not Apple's."""
    assert response.status_code == 401, response.text
    assert "identity token could not be verified" in response.text


async def test_a_name_planted_through_the_callback_does_not_name_a_new_account(
    env: Env,
) -> None:
    planted = await plant_through_the_callback(env)
    await env.web_sign_in(account=VICTIM, name=UNNAMED)
    user = await stored_user(env)
    assert user is not None
    assert (user.first_name, user.last_name) == (None, None)
    assert await pending_names(env) == 0
    assert_refused_as_forged(planted)


async def test_a_name_planted_through_the_callback_does_not_rename_an_unnamed_account(
    env: Env,
) -> None:
    await env.web_sign_in(account=VICTIM, name=UNNAMED)
    planted = await plant_through_the_callback(env)
    await env.web_sign_in(account=VICTIM)  # Apple sends no name the second time
    user = await stored_user(env)
    assert user is not None
    assert (user.first_name, user.last_name) == (None, None)
    assert_refused_as_forged(planted)


@pytest.mark.parametrize("with_state", [False, True], ids=["native", "apple_request_auth"])
async def test_apple_connect_plants_no_name_either(env: Env, with_state: bool) -> None:
    values = {
        "key": env.api_key,
        "code": "c" + "0" * 40 + ".0.abcd.forged",
        "id_token": unsigned_token(victim_sub(env), env.settings.app_ids[0]),
        "user": json.dumps(PLANTED),
    }
    if with_state:
        made = await env.http.post("/api/apple_request_auth", data={"key": env.api_key})
        values["state"] = made.json()["state"]
        values["id_token"] = unsigned_token(victim_sub(env), env.settings.client_id)
    response = await env.http.post("/api/apple_connect", data=values)
    await env.web_sign_in(account=VICTIM, name=UNNAMED)
    user = await stored_user(env)
    assert user is not None
    assert (user.first_name, user.last_name) == (None, None)
    assert await pending_names(env) == 0
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_id_token"


async def test_after_a_transient_failure_the_name_stays_with_its_sign_in_request(
    env: Env,
) -> None:
    """Apple's token endpoint fails (503): the name is kept with the state, nowhere else, and
    the same form_post sent again completes the sign-in with it."""
    start = await env.http.get("/auth/apple/start")
    form = await env.consent(start.headers["location"], account=VICTIM, name="Maria Ruiz")
    faults = env.sandbox.emulator_app.state.faults
    faults.add(Fault(id="down", endpoint="token", kind="status", status=503, count=5))
    failed = await env.http.post("/auth/apple/callback", data=form)
    assert failed.status_code == 503, failed.text
    assert await stored_user(env) is None
    assert await pending_names(env) == 0
    faults.clear()

    retried = await env.http.post("/auth/apple/callback", data={**form, "user": ""})
    assert retried.status_code == 303, retried.text
    finish = await env.http.get(retried.headers["location"])
    assert finish.status_code == 303
    user = await stored_user(env)
    assert user is not None
    assert (user.first_name, user.last_name) == ("Maria", "Ruiz")


async def test_a_native_sign_in_keeps_the_name_for_the_verified_sub_after_a_transient_failure(
    env: Env,
) -> None:
    """Without a state, the name outlives a failed exchange only under the ``sub`` of the app's
    id_token, and only because that token verified."""
    nonce = "n-" + "b" * 30
    native = await env.native_code(nonce=nonce, name={"firstName": "Maria", "lastName": "Ruiz"})
    faults = env.sandbox.emulator_app.state.faults
    faults.add(Fault(id="down", endpoint="token", kind="status", status=503, count=5))
    values = {"key": env.api_key, "nonce": nonce}
    values.update({k: native[k] for k in ("code", "id_token", "user")})
    failed = await env.http.post("/api/apple_connect", data=values)
    assert failed.status_code == 503, failed.text
    assert await pending_names(env) == 1
    faults.clear()

    again = await env.native_code(nonce=nonce)  # Apple sends no name the second time
    assert "user" not in again
    done = await env.http.post(
        "/api/apple_connect",
        data={
            "key": env.api_key,
            "nonce": nonce,
            "code": again["code"],
            "id_token": again["id_token"],
        },
    )
    assert done.status_code == 200, done.text
    user = await stored_user(env)
    assert user is not None
    assert (user.first_name, user.last_name) == ("Maria", "Ruiz")
    assert await pending_names(env) == 0
