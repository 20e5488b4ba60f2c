"""Throwaway PostgreSQL databases for tests (shared by tests/ and tests/server/)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

__all__ = ["created_database"]


@contextmanager
def created_database(admin_url: str, name: str) -> Iterator[str]:
    """A new PostgreSQL database ``name`` (made through ``admin_url``, a database URL of the
    same server), yielding its URL; dropped afterwards."""

    async def admin(sql: str) -> None:
        engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
