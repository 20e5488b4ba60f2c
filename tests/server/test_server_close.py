"""Closing the service (the app's shutdown): background work that is not a daemon finishes,
within ``CLOSE_GRACE``; daemons (the outbox's worker, housekeeping) are cancelled at once.
The whole shutdown with a real signal: test_server_shutdown.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from server_helpers import open_env

from appleconnect.server import container


async def test_unfinished_work_finishes_and_daemons_stop(tmp_path: Path) -> None:
    finished: list[str] = []
    daemon_cancelled = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0.5)
        finished.append("work")

    async def daemon() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            daemon_cancelled.set()
            raise

    async with open_env(tmp_path / "data", {}) as env:
        service = env.service
        loops = set(service.daemons)
        assert len(loops) == 2  # housekeeping and the outbox's worker
        service.spawn(work())
        service.spawn(daemon(), daemon=True)
        await asyncio.sleep(0)  # both have started
        started = asyncio.get_running_loop().time()
    assert finished == ["work"]
    assert daemon_cancelled.is_set()
    assert all(task.cancelled() for task in loops)
    assert service.background == set()
    assert asyncio.get_running_loop().time() - started < 5


async def test_work_past_the_grace_is_cancelled_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(container, "CLOSE_GRACE", 0.3)
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with caplog.at_level(logging.WARNING, logger="appleconnect.server.container"):
        async with open_env(tmp_path / "data", {}) as env:
            env.service.spawn(stuck())
            await asyncio.sleep(0)
    assert cancelled.is_set()
    assert "a background task did not finish within 0.3 s; cancelled" in caplog.text
