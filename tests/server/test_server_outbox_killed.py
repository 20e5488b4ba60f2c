"""A real ``appleconnect serve`` process killed (SIGKILL) while it sends a welcome mail: the mail
stays claimed until its lease expires, then another process sends it, once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import free_port, pending_mail, wait_for
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from appleconnect.server.db import migrate, session_factory
from appleconnect.server.models import OutboxMail, utcnow

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
pytestmark = pytest.mark.slow

LEASE = 4.0


class StallingInbox:
    """Holds the first transaction at RCPT (before the message is given) until released."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.messages: list[Any] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if not self.stalled.is_set():
            self.stalled.set()
            await asyncio.to_thread(self.release.wait)
            return "451 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[StallingInbox, int]]:
    inbox = StallingInbox()
    port = free_port()
    controller = aiosmtpd_controller.Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        inbox.release.set()
        controller.stop()


def serve(tmp_path: Path, name: str, database_url: str, smtp_port: int) -> tuple[Any, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "APPLECONNECT_MODE": "sandbox",
        "APPLECONNECT_PUBLIC_URL": url,
        "APPLECONNECT_DATABASE_URL": database_url,
        "APPLECONNECT_SMTP_HOST": "127.0.0.1",
        "APPLECONNECT_SMTP_PORT": str(smtp_port),
        "APPLECONNECT_SMTP_SECURITY": "none",
        "APPLECONNECT_SMTP_TIMEOUT": "2",
        "APPLECONNECT_MAIL_LEASE": str(LEASE),
        "APPLECONNECT_MAIL_FROM": "hello@example.com",
    }
    (tmp_path / name).mkdir()
    with (tmp_path / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "appleconnect.cli", "serve", "--port", str(port)],
            cwd=tmp_path / name,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for(url + "/healthz", process)
    return process, url


async def outbox(database_url: str) -> list[OutboxMail]:
    engine = create_async_engine(database_url)
    try:
        async with session_factory(engine)() as db:
            return list((await db.scalars(select(OutboxMail))).all())
    finally:
        await engine.dispose()


async def queue_one(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        await migrate(engine)
        async with session_factory(engine)() as db:
            db.add(pending_mail("maria.ruiz@example.com", "Hello Maria"))
            await db.commit()
    finally:
        await engine.dispose()


def test_a_mail_whose_sender_was_killed_is_sent_by_another_process(
    tmp_path: Path, database_url: str, smtp: tuple[StallingInbox, int]
) -> None:
    inbox, smtp_port = smtp
    asyncio.run(queue_one(database_url))
    first, _url = serve(tmp_path, "first", database_url, smtp_port)
    started: list[subprocess.Popen[bytes]] = [first]
    try:
        assert inbox.stalled.wait(30), "the first process never started sending"
        first.kill()  # SIGKILL in the middle of the SMTP transaction
        first.wait(10)
        (mail,) = asyncio.run(outbox(database_url))
        assert (mail.status, mail.attempts) == ("sending", 1)
        assert mail.claimed_until is not None
        assert mail.claimed_until > utcnow()
        inbox.release.set()

        second, _url = serve(tmp_path, "second", database_url, smtp_port)
        started.append(second)
        deadline = time.monotonic() + LEASE + 20
        while time.monotonic() < deadline:
            (mail,) = asyncio.run(outbox(database_url))
            if mail.status == "sent":
                break
            time.sleep(0.2)
        assert (mail.status, mail.attempts, mail.claim) == ("sent", 2, None)
        time.sleep(0.5)
        assert [m.rcpt_tos for m in inbox.messages] == [["maria.ruiz@example.com"]]
        assert b"Hello Maria" in inbox.messages[0].content
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
                process.wait(15)
