"""Helpers for the browser tests (a module of its own: test files cannot import conftest)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from appleconnect.sandbox import Sandbox
from appleconnect.server import store
from appleconnect.server.commands import admin_login_url
from appleconnect.server.db import create_engine, migrate, session_factory


@dataclass
class Site:
    """The running sandbox service and the second origin that embeds it."""

    url: str
    other_url: str
    sandbox: Sandbox

    @property
    def emulator(self) -> Any:
        return self.sandbox.emulator_app.state.emulator

    def admin_link(self) -> str:
        """A fresh one-time admin login link, as `appleconnect admin login-link` prints."""
        settings = self.sandbox.settings

        async def make() -> str:
            engine = create_engine(settings)
            try:
                await migrate(engine)
                async with session_factory(engine)() as db:
                    raw = await store.create_admin_login(db=db, ttl=300)
                    await db.commit()
            finally:
                await engine.dispose()
            return admin_login_url(settings, raw)

        # Playwright's sync API keeps an event loop in this thread: run ours in another.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, make()).result(timeout=30)
