"""The floor of the service's stack: what FastAPI, uvicorn and SQLAlchemy cost with no service.

``GET /json`` answers a small JSON object; ``POST /insert`` does one SQLAlchemy Core INSERT and
a COMMIT on the same kind of database as the service (SQLite in WAL mode, or PostgreSQL through
asyncpg). ``benchmarks/signin.py`` runs it with the service's own server and options, on the same
machine in the same run, and prints its figures beside the service's.

    python benchmarks/floor_app.py PORT DATABASE_URL
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, event, func, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

metadata = MetaData()
rows = Table(
    "floor_rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
)


def make_engine(url: str) -> AsyncEngine:
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_size=10, max_overflow=20)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def build(url: str) -> FastAPI:
    engine = make_engine(url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    statement = insert(rows)

    @app.get("/json")
    async def json_route() -> JSONResponse:
        return JSONResponse({"status": "ok", "valid": True, "user_id": 1})

    @app.post("/insert")
    async def insert_route() -> JSONResponse:
        async with engine.connect() as conn:
            await conn.execute(statement, {"token": os.urandom(16).hex()})
            await conn.commit()
        return JSONResponse({"status": "ok"})

    return app


def main() -> None:
    from appleconnect._serving import ServerLimits, run_server

    port, url = int(sys.argv[1]), sys.argv[2]
    options = ServerLimits().uvicorn_options()
    # The service's own server: the same protocol, limits and start-up heap freeze.
    run_server(build(url), host="127.0.0.1", port=port, log_level="warning", **options)


if __name__ == "__main__":
    main()
