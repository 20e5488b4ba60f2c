"""App transfer between teams (TN3159) against the in-process emulator: ``users migrate``
export on the sending team's service, then import (or a sign-in carrying ``transfer_sub``) on
the recipient team's service, over the same database. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from server_helpers import PUBLIC_URL, Env
from sqlalchemy import func, select

from appleconnect.server import Settings, create_app, store
from appleconnect.server.container import close_container, open_container
from appleconnect.server.models import User
from appleconnect.server.settings import Secret
from appleconnect.server.transfer import export_transfer_subs, import_transfer_subs

MARIA = "maria.ruiz@example.com"
LI = "li.wei@example.com"
TEAM_B = "TEAMB00001"


def recipient_settings(env: Env, team: dict[str, Any]) -> Settings:
    """The recipient team's service: same database, team B's credentials and client ids."""
    settings: Settings = env.settings.replace(
        team_id=team["team_id"],
        key_id=team["key_id"],
        private_key=Secret(team["private_key_pem"]),
        client_id=team["services_id"],
        app_ids=(team["app_id"],),
    )
    return settings


@asynccontextmanager
async def recipient(env: Env, team: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(recipient_settings(env, team), apple_transport=env.sandbox.transport)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as http:
            yield http


async def native_sign_in(env: Env, http: httpx.AsyncClient, client_id: str, account: str) -> Any:
    authorized = await env.http.post(
        "/apple/emulator/authorize",
        json={
            "client_id": client_id,
            "response_type": "code id_token",
            "scope": "name email",
            "state": "s" * 20,
            "account": account,
        },
    )
    params = authorized.json()["params"]
    connect = await http.post(
        "/api/apple_connect",
        data={"key": env.api_key, "code": params["code"], "id_token": params["id_token"]},
    )
    assert connect.status_code == 200, connect.text
    return connect.json()


async def users(env: Env) -> dict[int, User]:
    async with env.service.sessions() as db:
        return {u.id: u for u in (await db.scalars(select(User))).all()}


async def test_export_then_import_and_sign_in_rekey_users_to_the_new_team(env: Env) -> None:
    state = env.emulator
    team = state.create_team(team_id=TEAM_B, app_id="com.b.app", services_id="com.b.web")
    app_a = env.settings.app_ids[0]
    maria_a = await native_sign_in(env, env.http, app_a, MARIA)
    li_a = await native_sign_in(env, env.http, app_a, LI)
    before = await users(env)
    assert len(before) == 2
    ids = {u.email: u.id for u in before.values()}

    # Sending team: one transfer_sub per user, from Apple (the emulator), stored.
    exported = await export_transfer_subs(service=env.service, target_team_id=TEAM_B)
    assert (exported.done, exported.unchanged, exported.failed) == (2, 0, {})
    after_export = await users(env)
    maria_account, li_account = state.find_account(MARIA), state.find_account(LI)
    assert after_export[ids[MARIA]].transfer_sub == state.transfer_sub_for(maria_account.id, TEAM_B)
    assert after_export[ids[LI]].transfer_sub == state.transfer_sub_for(li_account.id, TEAM_B)
    assert after_export[ids[MARIA]].sub == maria_a["id_token"]["sub"]  # not re-keyed yet
    again = await export_transfer_subs(service=env.service, target_team_id=TEAM_B)
    assert (again.done, again.unchanged) == (0, 2)
    state.transfer_app(app_id=app_a, to_team=TEAM_B)  # Apple's app transfer to team B

    async with recipient(env, team) as http_b:
        # Li signs in to team B before the import: the id_token's transfer_sub links her.
        li_b = await native_sign_in(env, http_b, "com.b.app", LI)
        assert li_b["id_token"]["transfer_sub"] == after_export[ids[LI]].transfer_sub
        assert li_b["id_token"]["sub"] == state.sub_for(li_account.id, TEAM_B)
        assert li_b["id_token"]["sub"] != li_a["id_token"]["sub"]
        linked = await users(env)
        assert len(linked) == 2
        assert linked[ids[LI]].sub == li_b["id_token"]["sub"]

        # Recipient team: the import re-keys Maria; Li is already on her new sub.
        service_b = await open_container(
            recipient_settings(env, team), apple_transport=env.sandbox.transport
        )
        try:
            imported = await import_transfer_subs(service=service_b)
        finally:
            await close_container(service_b)
        assert (imported.done, imported.unchanged, imported.failed) == (1, 1, {})
        rekeyed = await users(env)
        assert rekeyed[ids[MARIA]].sub == state.sub_for(maria_account.id, TEAM_B)
        assert rekeyed[ids[MARIA]].first_name == before[ids[MARIA]].first_name

        # Maria now signs in to team B as the same account.
        maria_b = await native_sign_in(env, http_b, "com.b.app", MARIA)
        assert maria_b["id_token"]["sub"] == rekeyed[ids[MARIA]].sub
        info = await http_b.get("/api/get_currentuserinfo", params={"cookie": maria_b["cookie"]})
        assert info.json()["user"]["id"] == ids[MARIA]

    async with env.service.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(User)) == 2
        events = await store.audit_events(db=db, sub=rekeyed[ids[LI]].sub)
        migrated = [json.loads(e.detail) for e in events if e.event == "user.migrated"]
    assert migrated == [
        {
            "from_sub": li_a["id_token"]["sub"],
            "transfer_sub": after_export[ids[LI]].transfer_sub,
            "via": "sign-in",
        }
    ]


async def test_import_reports_a_transfer_sub_apple_does_not_know(env: Env) -> None:
    await native_sign_in(env, env.http, env.settings.app_ids[0], MARIA)
    async with env.service.sessions() as db:
        user = await db.scalar(select(User))
        assert user is not None
        user.transfer_sub = "000000.00000000000000000000000000000000.0000"
        await db.commit()
    report = await import_transfer_subs(service=env.service)
    assert (report.done, report.unchanged) == (0, 0)
    assert list(report.failed) == [user.id]
    assert "transfer_sub" in report.failed[user.id]
