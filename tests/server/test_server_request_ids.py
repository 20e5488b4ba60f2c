"""Request ids and log lines: ``X-Request-ID`` taken when valid or made, returned on every
answer (service and emulator), and in every log line of a real ``appleconnect serve`` and
``appleconnect emulator`` in text and in JSON, with no secret in any line."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from served_helpers import free_port, stop, wait_until_up
from server_helpers import Env

from appleconnect.logformat import TextFormatter, valid_request_id

HEX_ID = re.compile(r"[0-9a-f]{32}")
SECRET_COOKIE = "acs_requestidsecretsecretsecret0123456789"
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ \[(\S+)\] "
)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-1a2b3c", True),
        ("0b6f2c1e-5d2a-4e7b-9a61-3b9d2f1c7a10", True),
        ("has space", False),
        ('quote"d', False),
        ("x" * 129, False),
        ("new\nline", False),
        ("", False),
    ],
)
def test_which_ids_are_taken(given: str, kept: bool) -> None:
    assert valid_request_id(given) is kept


async def test_every_answer_carries_an_id(env: Env) -> None:
    taken = await env.http.get("/healthz", headers={"x-request-id": "edge-42"})
    assert taken.headers["x-request-id"] == "edge-42"
    replaced = await env.http.get("/healthz", headers={"x-request-id": "two words"})
    assert HEX_ID.fullmatch(replaced.headers["x-request-id"])
    made = [await env.http.get(path) for path in ("/nowhere", "/api/get_currentuserinfo")]
    assert [r.status_code for r in made] == [404, 401]
    assert all(HEX_ID.fullmatch(r.headers["x-request-id"]) for r in made)
    assert made[0].headers["x-request-id"] != made[1].headers["x-request-id"]
    emulator = await env.http.get("/apple/auth/keys", headers={"x-request-id": "emu-7"})
    assert emulator.status_code == 200
    assert emulator.headers.get_list("x-request-id") == ["emu-7"]


def _start(args: list[str], err: Path, environ: dict[str, str]) -> subprocess.Popen[bytes]:
    with err.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "appleconnect.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **environ},
        )


@pytest.fixture
def served_json(tmp_path: Path) -> Iterator[tuple[str, str, Path, Path]]:
    service_port, emulator_port = free_port(), free_port()
    service_log, emulator_log = tmp_path / "serve.err", tmp_path / "emulator.err"
    service = _start(
        [
            *("serve", "--port", str(service_port), "--data-dir", str(tmp_path / "data")),
            "--log-format",
            "json",
        ],
        service_log,
        {},
    )
    # The emulator takes the format from the environment; it does not make serve production.
    emulator = _start(
        ["emulator", "--port", str(emulator_port), "--state-dir", str(tmp_path / "emu")],
        emulator_log,
        {"APPLECONNECT_LOG_FORMAT": "json"},
    )
    try:
        base, apple = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{emulator_port}"
        wait_until_up(base + "/healthz", service)
        wait_until_up(apple + "/auth/keys", emulator)
        yield base, apple, service_log, emulator_log
    finally:
        stop(service)
        stop(emulator)


def _json_lines(log: Path) -> list[dict[str, str]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in entries:
        assert {"time", "level", "logger", "request_id", "message"} <= set(entry), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    return entries


def test_json_logs_of_serve_and_emulator(served_json: tuple[str, str, Path, Path]) -> None:
    base, apple, service_log, emulator_log = served_json
    headers = {"x-request-id": "trace-serve-1"}
    answer = httpx.get(f"{base}/api/get_currentuserinfo?cookie={SECRET_COOKIE}", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["x-request-id"] == "trace-serve-1"
    assert httpx.get(f"{apple}/auth/keys").status_code == 200
    time.sleep(0.5)  # the access log line is written after the answer
    served = _json_lines(service_log)
    access = [
        e for e in served if e["logger"] == "uvicorn.access" and "currentuserinfo" in e["message"]
    ]
    assert [e["request_id"] for e in access] == ["trace-serve-1"]
    assert "cookie=[redacted]" in access[0]["message"]
    assert SECRET_COOKIE not in service_log.read_text()
    assert {e["level"] for e in served} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    emulated = _json_lines(emulator_log)  # the same format (no request ids: see the docs)
    assert any("/auth/keys" in e["message"] for e in emulated if e["logger"] == "uvicorn.access")


def test_text_logs_name_time_level_logger_and_request_id(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "serve.err"
    service = _start(["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")], log, {})
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", service)
        httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"x-request-id": "plain-9"})
        time.sleep(0.5)
    finally:
        stop(service)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    starts = [TEXT_LINE.match(line) for line in lines]
    # Every line starts with time, level, logger and request id (tracebacks aside: none here).
    assert all(starts), [line for line, m in zip(lines, starts, strict=True) if not m]
    ids = [m.group(2) for m in starts if m]
    assert "plain-9" in ids


async def test_the_unexpected_error_page_and_its_log_line_carry_the_id(env: Env) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    env.sandbox.service_app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=env.sandbox.app, raise_app_exceptions=False)
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(TextFormatter().format(record))

    handler = Capture()
    logging.getLogger("appleconnect").addHandler(handler)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as h:
            response = await h.get("/boom", headers={"x-request-id": "boom-1"})
    finally:
        logging.getLogger("appleconnect").removeHandler(handler)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "boom-1"
    assert next(line for line in seen if "unexpected error on /boom" in line).split(" ")[3] == (
        "[boom-1]"
    )
