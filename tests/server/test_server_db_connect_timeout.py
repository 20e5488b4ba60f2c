"""A PostgreSQL server that does not answer (a black hole, not a refusal) is a database outage
within ``db.PG_CONNECT_TIMEOUT``, not a minute-long hang of every request."""

from __future__ import annotations

import time

import pytest

from appleconnect.server import db, load_settings
from appleconnect.server.health import is_database_unavailable


async def test_an_unanswered_connect_fails_within_the_timeout(
    full_backlog: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PG_CONNECT_TIMEOUT", 0.5)
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{full_backlog}/appleconnect"
    engine = db.create_engine(load_settings(environ={}, overrides={"database_url": url}))
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError) as caught:
            async with engine.connect():
                pass  # pragma: no cover - never connects
    finally:
        await engine.dispose()
    assert time.monotonic() - started < 5  # asyncpg's own default would wait 60 s
    assert is_database_unavailable(caught.value)
