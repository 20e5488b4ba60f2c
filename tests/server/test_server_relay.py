"""Mail to Hide My Email users in sandbox mode: the welcome mail takes a real SMTP hop through the
emulator's Private Email Relay (aiosmtpd on loopback), and a bounce is recorded on the user."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from server_helpers import Env, open_env
from sqlalchemy import select
from test_admin_panel import login

from appleconnect.sandbox import compose
from appleconnect.server.models import OutboxMail, User
from appleconnect.server.relay_mail import required_sources

ACCOUNT = "maria.ruiz@example.com"
OVERRIDES = {"welcome_email": True, "mail_from": "Example <hello@example.com>"}


async def sign_in_hiding_email(env: Env) -> User:
    start = await env.http.get("/auth/apple/start", params={"next": "/"})
    assert start.status_code == 303, start.text
    form = await env.consent(start.headers["location"], name="Maria Ruiz", share_email=False)
    callback = await env.http.post("/auth/apple/callback", data=form)
    assert callback.status_code == 303, callback.text
    async with env.service.sessions() as db:
        user = (await db.scalars(select(User))).one()
    assert user.is_private_email
    assert user.email is not None
    assert user.email.endswith("@privaterelay.appleid.com")
    return user


async def settled_mail(env: Env) -> OutboxMail:
    """The one welcome mail once the worker has finished with it (bounded wait)."""
    for _ in range(200):
        async with env.service.sessions() as db:
            mails = (await db.scalars(select(OutboxMail))).all()
        if mails and mails[0].status in ("sent", "failed"):
            return mails[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the welcome mail was not settled: {[m.status for m in mails]}")


async def mailbox(env: Env) -> list[dict[str, Any]]:
    response = await env.http.get("/apple/emulator/mailbox", params={"account": ACCOUNT})
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


async def relay_log(env: Env) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (await env.http.get("/apple/emulator/relay-log")).json()
    return result


async def test_welcome_mail_to_a_relay_address_reaches_the_mailbox(tmp_path: Path) -> None:
    async with open_env(tmp_path / "data", OVERRIDES) as env:
        sources = (await env.http.get("/apple/emulator/email-sources")).json()["sources"]
        assert [s["domain"] for s in sources] == ["example.com"]  # registered by the sandbox
        user = await sign_in_hiding_email(env)
        mail = await settled_mail(env)
        assert (mail.status, mail.to_address) == ("sent", user.email)
        [got] = await mailbox(env)
        assert got["to"] == ACCOUNT
        assert got["relay_address"] == user.email
        assert got["from"] == "Example <hello@example.com>"
        assert got["mail_from"] == "hello@example.com"
        assert "Hello Maria" in got["body"]
        async with env.service.sessions() as db:
            fresh = await db.get(User, user.id)
            assert fresh is not None
            assert (fresh.email_undeliverable, fresh.email_bounces) == (False, 0)


async def test_unregistered_sender_bounces_and_the_user_is_marked(tmp_path: Path) -> None:
    async with open_env(tmp_path / "data", OVERRIDES) as env:
        removed = await env.http.request(
            "DELETE", "/apple/emulator/email-sources", json={"domain": "example.com"}
        )
        assert removed.status_code == 204
        user = await sign_in_hiding_email(env)
        mail = await settled_mail(env)
        # A 550 is final: no retry.
        assert mail.status == "failed"
        assert mail.error is not None
        assert "5.1.1 bad mailbox name" in mail.error
        assert env.service.outbox.relay_bounces == 1
        [entry] = await relay_log(env)
        assert (entry["outcome"], entry["smtp_reply"]) == ("refused", "550 5.1.1 bad mailbox name")
        assert await mailbox(env) == []
        async with env.service.sessions() as db:
            fresh = await db.get(User, user.id)
            assert fresh is not None
            assert (fresh.email_undeliverable, fresh.email_bounces) == (True, 1)
        users_page = await admin_users_page(env)
        assert "undeliverable" in users_page

        # email-enabled from Apple (the user turned forwarding on again) clears the flag.
        for enabled in (False, True):
            changed = await env.http.post(
                f"/apple/emulator/accounts/{ACCOUNT}/email-forwarding",
                json={"enabled": enabled, "wait": True},
            )
            assert changed.status_code == 200, changed.text
        async with env.service.sessions() as db:
            fresh = await db.get(User, user.id)
            assert fresh is not None
            assert (fresh.email_undeliverable, fresh.email_forwarding) == (False, True)
            assert fresh.email_bounces == 1


async def admin_users_page(env: Env) -> str:
    await login(env)
    page = await env.http.get("/admin/users")
    assert page.status_code == 200, page.text
    return page.text


async def test_forwarding_off_nothing_is_delivered(tmp_path: Path) -> None:
    async with open_env(tmp_path / "data", OVERRIDES) as env:
        # The user turned forwarding off for this team (before the welcome mail is sent).
        account = env.emulator.find_account(ACCOUNT)
        env.emulator.set_forwarding(account.id, env.settings.team_id, False)
        await sign_in_hiding_email(env)
        mail = await settled_mail(env)
        assert mail.status == "sent"  # Apple accepts it, then drops it
        assert await mailbox(env) == []
        [entry] = await relay_log(env)
        assert entry["outcome"] == "dropped"


def test_sandbox_banner_and_credentials_name_the_relay(tmp_path: Path) -> None:
    composed = compose(
        host="127.0.0.1", port=8000, data_dir=tmp_path / "data", config=None, environ={}
    )
    [line] = [line for line in composed.banner if "email relay SMTP" in line]
    port = int(line.split("127.0.0.1:")[1].split()[0])
    credentials = json.loads((tmp_path / "data" / "emulator" / "credentials.json").read_text())
    assert (credentials["smtp_host"], credentials["smtp_port"]) == ("127.0.0.1", port)

    async def greeting() -> bytes:
        # The relay answers there while the app runs (an SMTP greeting from aiosmtpd).
        async with composed.app.router.lifespan_context(composed.app):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
        return line

    assert asyncio.run(greeting()).startswith(b"220 ")


def test_required_sources_name_the_from_domain_and_address(tmp_path: Path) -> None:
    from appleconnect.server import load_settings

    settings = load_settings(
        data_dir=tmp_path, environ={}, overrides={"mail_from": "Example <hello@Example.COM>"}
    )
    assert [(s.kind, s.value) for s in required_sources(settings)] == [
        ("domain", "example.com"),
        ("email", "hello@Example.COM"),
    ]


async def test_admin_lists_the_sources_and_verify_checks_them_at_the_emulator(
    tmp_path: Path,
) -> None:
    async with open_env(tmp_path / "data", OVERRIDES) as env:
        csrf = await login(env)
        listed = await env.http.get("/admin/new-users")
        assert "domain <code>example.com</code>" in listed.text
        assert "Sign in with Apple for Email Communication" in listed.text

        headers = {"origin": "http://127.0.0.1:8000"}
        ok = await env.http.post("/admin/verify", data={"csrf": csrf}, headers=headers)
        assert ok.status_code == 200, ok.text
        assert "has a source registered for this sender" in ok.text

        await env.http.request(
            "DELETE", "/apple/emulator/email-sources", json={"domain": "example.com"}
        )
        missing = await env.http.post("/admin/verify", data={"csrf": csrf}, headers=headers)
        assert "none of these sources registered" in missing.text
        assert "not registered" in missing.text


async def test_production_gets_a_reminder_not_a_check(tmp_path: Path) -> None:
    from appleconnect.server import Settings
    from appleconnect.server.admin.email_sources import check_email_sources

    settings = Settings(mode="production", mail_from="hello@example.com")
    result = await check_email_sources(None, settings)  # type: ignore[arg-type]
    assert result["ok"] is None
    assert "check them in the developer portal" in result["detail"]
    assert [s.value for s in result["sources"]] == ["example.com", "hello@example.com"]
