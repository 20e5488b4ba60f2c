"""The email outbox's delivery: retries over time while the SMTP server is down (aiosmtpd on
loopback, stopped and started), claims shared by several workers, expired leases taken over,
and the admin panel's "retry now" and "discard"."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from server_helpers import Env, Inbox, free_port, open_env, pending_mail
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from test_admin_panel import events, login

from appleconnect.server.db import session_factory
from appleconnect.server.health import DatabaseHealth
from appleconnect.server.models import OutboxMail, utcnow
from appleconnect.server.outbox import OutboxWorker, backoff
from appleconnect.server.settings import Settings

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

SMTP_SETTINGS: dict[str, Any] = {
    "welcome_email": True,
    "mail_from": "hello@example.com",
    "smtp_host": "127.0.0.1",
    "smtp_security": "none",
    "smtp_timeout": 2.0,
    "mail_lease": 5.0,
    "mail_retry_base": 0.2,
    "mail_retry_max": 0.5,
}


class SmtpServer:
    """aiosmtpd on a fixed loopback port, which a test stops and starts again."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.port = free_port()
        self.controller: Any = None

    def start(self) -> None:
        self.controller = aiosmtpd_controller.Controller(
            self.inbox, hostname="127.0.0.1", port=self.port
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


async def wait_until(check: Callable[[], Any], what: str, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def mails(env_or_sessions: Any) -> list[OutboxMail]:
    sessions = getattr(env_or_sessions, "service", None)
    sessions = sessions.sessions if sessions is not None else env_or_sessions
    async with sessions() as db:
        return list((await db.scalars(select(OutboxMail).order_by(OutboxMail.id))).all())


def test_backoff_doubles_from_the_base_up_to_the_maximum() -> None:
    settings = Settings(mail_retry_base=60.0, mail_retry_max=3600.0)
    assert [backoff(n, settings) for n in range(1, 9)] == [
        60.0,
        120.0,
        240.0,
        480.0,
        960.0,
        1920.0,
        3600.0,
        3600.0,
    ]


async def test_mail_queued_while_smtp_is_down_is_delivered_once_when_it_is_back(
    tmp_path: Path, database_url: str
) -> None:
    inbox = Inbox()
    smtp = SmtpServer(inbox)  # not started: connections are refused
    people = ["maria.ruiz@example.com", "li.wei@example.com", "sam.okafor@example.com"]
    try:
        async with open_env(
            tmp_path,
            # Enough attempts that a slow machine cannot use them up before the server is back.
            {
                "database_url": database_url,
                "smtp_port": smtp.port,
                **SMTP_SETTINGS,
                "mail_max_attempts": 1000,
            },
        ) as env:
            for account in people:
                native = await env.native_code(account=account, name="Maria Ruiz")
                response = await env.http.post(
                    "/api/apple_connect",
                    data={"key": env.api_key, "code": native["code"], "user": native["user"]},
                )
                assert response.status_code == 200, response.text

            async def retried() -> bool:
                rows = await mails(env)
                return len(rows) == 3 and all(m.attempts >= 3 for m in rows)

            await wait_until(retried, "three attempts of each mail")
            for mail in await mails(env):
                assert mail.status in ("pending", "sending")
                assert mail.error is not None
                assert "refused" in mail.error.lower()
            assert inbox.messages == []
            smtp.start()  # no new sign-up from here on

            async def all_sent() -> bool:
                return all(m.status == "sent" for m in await mails(env))

            await wait_until(all_sent, "every mail sent")
            await asyncio.sleep(1.0)  # a second delivery would show up within this
            assert inbox.recipients() == sorted(people)
            worker = env.service.outbox
            assert worker.sent == 3
            # At least two failed attempts of each mail were over (a third may have been under way).
            assert worker.failed_attempts >= 6
            assert worker.gave_up == 0
    finally:
        smtp.stop()


async def test_a_mail_gives_up_after_the_maximum_attempts(
    tmp_path: Path, database_url: str
) -> None:
    smtp = SmtpServer(Inbox())
    overrides = {"database_url": database_url, "smtp_port": smtp.port, **SMTP_SETTINGS}
    async with open_env(tmp_path, {**overrides, "mail_max_attempts": 2}) as env:
        native = await env.native_code(name="Maria Ruiz")
        response = await env.http.post(
            "/api/apple_connect",
            data={"key": env.api_key, "code": native["code"], "user": native["user"]},
        )
        assert response.status_code == 200, response.text

        async def failed() -> bool:
            return [m.status for m in await mails(env)] == ["failed"]

        await wait_until(failed, "the mail to give up")
        await asyncio.sleep(0.6)  # more than mail_retry_max: no third attempt
        (mail,) = await mails(env)
        assert mail.attempts == 2
        assert mail.next_attempt_at is None
        assert env.service.outbox.gave_up == 1


def _worker_settings(port: int, **changes: Any) -> Settings:
    return Settings(**{**SMTP_SETTINGS, "smtp_port": port, **changes})


async def _queue(sessions: Any, count: int) -> None:
    async with sessions() as db:
        db.add_all(pending_mail(f"user{n}@example.com") for n in range(count))
        await db.commit()


async def test_two_processes_never_send_one_mail_twice(tmp_path: Path, database_url: str) -> None:
    inbox = Inbox()
    smtp = SmtpServer(inbox)
    smtp.start()
    # Two engines and two workers over one database: what two processes have.
    engines = [create_async_engine(database_url) for _ in range(2)]
    try:
        async with open_env(tmp_path, {"database_url": database_url}):  # creates the schema
            pass
        sessions = [session_factory(e) for e in engines]
        await _queue(sessions[0], 30)
        settings = _worker_settings(smtp.port)
        workers = [OutboxWorker(s, lambda: settings, DatabaseHealth()) for s in sessions]
        for _ in range(3):
            await asyncio.gather(*(w.deliver_due() for w in workers))
        assert [m.status for m in await mails(sessions[0])] == ["sent"] * 30
        assert inbox.recipients() == sorted(f"user{n}@example.com" for n in range(30))
        assert workers[0].sent + workers[1].sent == 30
        assert all(m.attempts == 1 for m in await mails(sessions[0]))
    finally:
        for engine in engines:
            await engine.dispose()
        smtp.stop()


async def test_a_claim_that_expired_is_taken_over_and_the_late_outcome_ignored(
    tmp_path: Path, database_url: str
) -> None:
    inbox = Inbox()
    smtp = SmtpServer(inbox)
    smtp.start()
    engine = create_async_engine(database_url)
    try:
        async with open_env(tmp_path, {"database_url": database_url}):
            pass
        sessions = session_factory(engine)
        await _queue(sessions, 1)
        settings = _worker_settings(smtp.port, smtp_timeout=0.25, mail_lease=0.5)
        gone = OutboxWorker(sessions, lambda: settings, DatabaseHealth())
        other = OutboxWorker(sessions, lambda: settings, DatabaseHealth())
        (mail,) = await mails(sessions)
        old_claim = await gone.claim(mail.id, settings)  # then the process "dies"
        assert old_claim is not None
        assert await other.deliver_due() > 0  # claimed, lease running: not sent
        assert inbox.messages == []
        await asyncio.sleep(0.6)
        await other.deliver_due()
        (mail,) = await mails(sessions)
        assert (mail.status, mail.attempts) == ("sent", 2)
        assert inbox.recipients() == ["user0@example.com"]
        # The first process's outcome, arriving late, changes nothing.
        await gone._record(mail.id, old_claim, status="pending", error="late")
        (mail,) = await mails(sessions)
        assert (mail.status, mail.error) == ("sent", None)
    finally:
        await engine.dispose()
        smtp.stop()


async def test_outbox_page_retry_and_discard(env: Env) -> None:
    async with env.service.sessions() as db:
        for status in ("failed", "pending", "sent"):
            db.add(
                OutboxMail(
                    to_address=f"{status}@example.com",
                    subject="Welcome",
                    body="Hello",
                    created_at=utcnow(),
                    status=status,
                    attempts=12 if status == "failed" else 1,
                    error="refused" if status != "sent" else None,
                )
            )
        await db.commit()
    failed, pending, sent = await mails(env)
    csrf = await login(env)
    page = await env.http.get("/admin/outbox")
    assert "No SMTP server is set" in page.text
    assert "Sandbox mode: mail is not sent" not in page.text
    assert f'action="/admin/outbox/{failed.id}/retry"' in page.text
    assert f'action="/admin/outbox/{sent.id}/retry"' not in page.text

    forged = await env.http.post(f"/admin/outbox/{failed.id}/retry", data={"csrf": "0" * 64})
    assert forged.status_code == 403
    assert (await mails(env))[0].status == "failed"

    retried = await env.http.post(f"/admin/outbox/{failed.id}/retry", data={"csrf": csrf})
    assert retried.headers["location"] == "/admin/outbox?done=retry"
    discarded = await env.http.post(f"/admin/outbox/{pending.id}/discard", data={"csrf": csrf})
    assert discarded.headers["location"] == "/admin/outbox?done=discarded"
    unchanged = await env.http.post(f"/admin/outbox/{sent.id}/discard", data={"csrf": csrf})
    assert unchanged.headers["location"] == "/admin/outbox?done=unchanged"
    rows = await mails(env)
    assert [(m.status, m.attempts, m.error) for m in rows] == [
        ("pending", 0, None),
        ("discarded", 1, "refused"),
        ("sent", 1, None),
    ]
    audited = [(e.event, json.loads(e.detail)) for e in await events(env, "admin.mail_")]
    assert audited == [
        ("admin.mail_retry", {"id": failed.id}),
        ("admin.mail_discarded", {"id": pending.id}),
    ]

    env.service.settings = dataclasses.replace(env.service.settings, smtp_host="smtp.example.com")
    page = await env.http.get("/admin/outbox")
    assert "Mail is sent through smtp.example.com" in page.text
