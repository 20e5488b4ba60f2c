"""The welcome email, through a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import asyncio
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import PUBLIC_URL, Env, Inbox
from sqlalchemy import select

from appleconnect.sandbox import build_sandbox_app
from appleconnect.server import store
from appleconnect.server.models import OutboxMail

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")


@pytest.mark.parametrize("smtp", [True, False], ids=["smtp", "outbox"])
async def test_new_user_gets_one_welcome_email(tmp_path: Path, smtp: bool) -> None:
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = aiosmtpd_controller.Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        overrides: dict[str, Any] = {
            "welcome_email": True,
            "mail_from": "hello@example.com",
            "welcome_subject": "Welcome aboard",
        }
        if smtp:
            overrides.update(
                smtp_host="127.0.0.1",
                smtp_port=port,
                smtp_security="none",
            )
        sandbox = build_sandbox_app(tmp_path / "data", public_url=PUBLIC_URL, overrides=overrides)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(sandbox.app.router.lifespan_context(sandbox.app))
            http = await stack.enter_async_context(
                httpx.AsyncClient(transport=sandbox.transport, base_url=PUBLIC_URL)
            )
            service = sandbox.service_app.state.container
            async with service.sessions() as db:
                key = await store.create_api_key(db=db, name="t")
                await db.commit()
            env = Env(sandbox=sandbox, http=http, api_key=key)
            for _ in range(2):  # the second sign-in is not a new user: no second email
                native = await env.native_code(name="Maria Ruiz")
                response = await http.post(
                    "/api/apple_connect",
                    data={"key": key, **{k: native[k] for k in ("code", "user") if k in native}},
                )
                assert response.status_code == 200, response.text
            # The message reaches the SMTP server before the sender records it as sent: wait
            # for both (bounded), so that the assertions below see the final state.
            for _ in range(200):
                async with service.sessions() as db:
                    mails = (await db.scalars(select(OutboxMail))).all()
                if not smtp or (inbox.messages and mails and mails[0].status == "sent"):
                    break
                await asyncio.sleep(0.05)
        assert len(mails) == 1
        assert mails[0].to_address == "maria.ruiz@example.com"
        if smtp:
            assert mails[0].status == "sent"
            assert len(inbox.messages) == 1
            envelope = inbox.messages[0]
            assert envelope.rcpt_tos == ["maria.ruiz@example.com"]
            assert envelope.mail_from == "hello@example.com"
            assert b"Subject: Welcome aboard" in envelope.content
            assert b"Hello Maria" in envelope.content
        else:
            assert mails[0].status == "outbox"
            assert inbox.messages == []
    finally:
        controller.stop()
