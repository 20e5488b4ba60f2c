"""Readiness: ``GET /readyz`` answers 200 when this process can serve sign-ins, else 503, with a
JSON body naming each check and what is not ready.

The checks: the database answers (:meth:`.health.DatabaseHealth.check`, within two seconds) and
its schema is at the newest migration; the Apple settings are complete; in sandbox mode the
emulator standing in for Apple answers (``GET …/auth/keys``). Liveness stays ``/healthz``,
which never touches the database (:mod:`.routes.home`).
"""

from __future__ import annotations

import asyncio
from functools import cache

import httpx
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from appleconnect import APPLE_BASE_URL

from .container import ServiceContainer
from .db import MIGRATIONS, current_revision
from .deps import ContainerDep
from .health import CHECK_TIMEOUT, is_database_unavailable

__all__ = ["OK", "readiness", "router", "schema_head"]

router = APIRouter()

OK = "ok"


@cache
def schema_head() -> str | None:
    """The newest migration shipped with this version of the service."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


async def _database(service: ServiceContainer) -> tuple[str, str]:
    """The database's check and the schema's check."""
    try:
        if not await service.health.check(service.engine):
            return f"unavailable: {service.health.reason}", "unknown: the database is unavailable"
        async with asyncio.timeout(CHECK_TIMEOUT):
            revision = await current_revision(service.engine)
    except Exception as exc:
        if not is_database_unavailable(exc) and not isinstance(exc, TimeoutError):
            raise
        service.health.failed(exc)
        return f"unavailable: {service.health.reason}", "unknown: the database is unavailable"
    head = schema_head()
    if revision != head:
        return OK, f"not current: at migration {revision}, this version needs {head}"
    return OK, OK


async def _emulator(service: ServiceContainer) -> str:
    url = service.settings.apple_base_url.rstrip("/") + "/auth/keys"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            response = await service.apple.http.get(url)
    except (httpx.HTTPError, TimeoutError) as exc:
        return f"unavailable: {type(exc).__name__} from GET {url}"
    if response.status_code != 200:
        return f"unavailable: GET {url} answered {response.status_code}"
    return OK


async def readiness(service: ServiceContainer) -> dict[str, str]:
    """Each check's result: ``ok`` or a sentence saying what is not ready."""
    database, schema = await _database(service)
    checks = {"database": database, "schema": schema}
    missing = service.apple.missing
    checks["apple_settings"] = OK if not missing else "missing: " + ", ".join(missing)
    if service.settings.sandbox and service.settings.apple_base_url != APPLE_BASE_URL:
        checks["emulator"] = await _emulator(service)
    return checks


@router.get("/readyz", include_in_schema=False)
async def readyz(service: ContainerDep) -> JSONResponse:
    checks = await readiness(service)
    ready = all(result == OK for result in checks.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "not_ready": sorted(name for name, result in checks.items() if result != OK),
        "checks": checks,
    }
    return JSONResponse(
        body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"}
    )
