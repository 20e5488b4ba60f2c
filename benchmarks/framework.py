"""CPU of the service's framework layer per request, in process: no sockets, no uvicorn.

Builds the sandbox (SQLite in a temporary directory, rate limits on but out of reach, as
``benchmarks/signin.py`` runs the service), signs one user in through the emulator, then calls
the service's ASGI app directly with a raw HTTP scope ``N`` times per route and prints the
process CPU time per call (``time.process_time``). A bare FastAPI JSON route is timed in the
same loop as the floor. ``--log`` also writes uvicorn's access-log line for each call through
the logging set-up of ``appleconnect serve`` (redaction and the text format, to /dev/null).

    python benchmarks/framework.py [N] [--log]

Run it alternately against two checkouts (``PYTHONPATH=other/src``) to compare them; the
figures of one run are inflated by whatever else the machine does, their ratios much less.
docs/performance.md#framework-cost-per-request.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "server"))

from server_helpers import open_env

from appleconnect._logredact import install_log_redaction
from appleconnect.logformat import log_config

LIMITS = {"rate_limit_per_ip": 100_000_000, "rate_limit_per_key": 100_000_000}


def floor_app() -> FastAPI:
    app = FastAPI()

    @app.get("/json")
    async def json_route() -> JSONResponse:
        return JSONResponse({"status": "ok", "valid": True, "user_id": 1})

    return app


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(
    app: Any, request: dict[str, Any], body: bytes, access: logging.Logger | None
) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(dict(request, headers=list(request["headers"]), state={}), receive, send)
    status: int = sent[0]["status"]
    if access is not None:  # uvicorn's access-log line, as its httptools protocol writes it
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:50000",
            request["method"],
            request["path"],
            "1.1",
            status,
        )
    return status


async def timed(app: Any, request: dict[str, Any], body: bytes, n: int, access: Any) -> float:
    expected = 400 if request["query_string"] else 200
    for _ in range(50):
        status = await call(app, request, body, access)
        assert status == expected, status
    start = time.process_time()
    for _ in range(n):
        await call(app, request, body, access)
    return (time.process_time() - start) / n * 1000


def access_log() -> logging.Logger:
    """uvicorn's access logger, set up as ``appleconnect serve`` sets it up, writing nowhere."""
    logging.config.dictConfig(log_config("text"))
    install_log_redaction()
    for handler in logging.getLogger().handlers:
        handler.setStream(open(os.devnull, "w"))  # type: ignore[attr-defined]  # noqa: SIM115
    return logging.getLogger("uvicorn.access")


async def main(n: int, access: logging.Logger | None, database_url: str) -> None:
    overrides = {**LIMITS, "database_url": database_url} if database_url else LIMITS
    with tempfile.TemporaryDirectory() as tmp:
        async with open_env(Path(tmp), overrides) as env:
            native = await env.native_code()
            form = {k: native[k] for k in ("code", "id_token", "user") if k in native}
            headers = {"X-API-Key": env.api_key}
            connect = await env.http.post("/api/apple_connect", data=form, headers=headers)
            assert connect.status_code == 200, connect.text
            token = connect.json()["cookie"]
            app = env.sandbox.service_app
            bearer = [(b"authorization", f"Bearer {token}".encode())]
            key = env.api_key.encode()
            routes = {
                "floor GET /json": (floor_app(), scope("GET", "/json", []), b""),
                "GET /api/get_currentuserinfo": (
                    app,
                    scope("GET", "/api/get_currentuserinfo", bearer),
                    b"",
                ),
                "GET /api/validate_auth_cookie": (
                    app,
                    scope("GET", "/api/validate_auth_cookie", bearer),
                    b"",
                ),
                # The API key checked, then a 400 (no row written, unlike a 200 here).
                "GET /api/apple_request_auth (key, 400)": (
                    app,
                    dict(
                        scope("GET", "/api/apple_request_auth", [(b"x-api-key", key)]),
                        query_string=b"redirect_uri=https%3A%2F%2Felsewhere.example%2F",
                    ),
                    b"",
                ),
            }
            for name, (target, request, body) in routes.items():
                if "--profile" in sys.argv and "currentuser" not in name:
                    continue
                ms = await timed(target, request, body, n, access)
                print(f"{name:42} {ms:.4f} ms CPU per call")


if __name__ == "__main__":
    import appleconnect

    print("appleconnect from", Path(appleconnect.__file__).parent, file=sys.stderr)
    count = int(next((a for a in sys.argv[1:] if a.isdigit()), "5000"))
    url = sys.argv[sys.argv.index("--database-url") + 1] if "--database-url" in sys.argv else ""
    asyncio.run(main(count, access_log() if "--log" in sys.argv else None, url))
