"""No live secret in any log line: the real ``appleconnect serve`` and ``appleconnect emulator``
processes, run by uvicorn on loopback, write access-log lines with every secret-bearing
parameter redacted; the API key and the session token are also accepted in headers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from served_helpers import free_port, start_cli, stop, wait_until_up
from server_helpers import Env

from appleconnect._logredact import REDACTED, RedactSecrets, install_log_redaction, redact

SECRETS = {
    "key": "ack_SentinelApiKey0123456789",
    "cookie": "acs_SentinelSession0123456789",
    "handoff": "ach_SentinelHandoff0123456789",
    "token": "acl_SentinelLogin0123456789",
    "code": "c0de.Sentinel.0123456789",
    "id_token": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzZW50aW5lbCJ9.c2lnbmF0dXJl",
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, Path, Path]]:
    service_port, emulator_port = free_port(), free_port()
    service_log, emulator_log = tmp_path / "serve.log", tmp_path / "emulator.log"
    service = start_cli(
        ["serve", "--port", str(service_port), "--data-dir", str(tmp_path / "data")], service_log
    )
    emulator = start_cli(
        ["emulator", "--port", str(emulator_port), "--state-dir", str(tmp_path / "emu")],
        emulator_log,
    )
    try:
        base, apple = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{emulator_port}"
        wait_until_up(base + "/openapi.json", service)
        wait_until_up(apple + "/auth/keys", emulator)
        yield base, apple, service_log, emulator_log
    finally:
        stop(service)
        stop(emulator)


def _query() -> str:
    return "&".join(f"{name}={value}" for name, value in SECRETS.items())


def test_access_logs_of_serve_and_emulator_carry_no_secret(
    served: tuple[str, str, Path, Path],
) -> None:
    base, apple, service_log, emulator_log = served
    for path in (
        f"/api/get_currentuserinfo?cookie={SECRETS['cookie']}",
        f"/api/apple_request_auth?key={SECRETS['key']}",
        f"/auth/apple/finish?handoff={SECRETS['handoff']}",
        f"/admin/login?token={SECRETS['token']}",
        f"/api/apple_connect?{_query()}",
    ):
        assert httpx.get(base + path, timeout=10).status_code < 500
    headers = {"Authorization": f"Bearer {SECRETS['cookie']}", "X-API-Key": SECRETS["key"]}
    assert httpx.get(base + "/api/validate_auth_cookie", headers=headers).status_code == 401
    assert httpx.get(f"{apple}/auth/authorize?{_query()}", timeout=10).status_code < 500
    time.sleep(0.5)  # the access log line is written after the answer
    served_text = service_log.read_text()
    emulator_text = emulator_log.read_text()
    for name, secret in SECRETS.items():
        assert secret not in served_text, name
        assert secret not in emulator_text, name
    # The lines are there, with the parameter names and the redaction mark.
    assert f'"GET /api/get_currentuserinfo?cookie={REDACTED} HTTP/1.1" 401' in served_text
    assert f'"GET /auth/apple/finish?handoff={REDACTED} HTTP/1.1"' in served_text
    assert f'"GET /admin/login?token={REDACTED} HTTP/1.1"' in served_text
    assert f"GET /auth/authorize?key={REDACTED}&cookie={REDACTED}" in emulator_text


def test_redact_covers_parameters_headers_tokens_and_jwts() -> None:
    line = (
        "GET /x?next=/home&key=ack_aaaaaaaaaa&state=s1&code=c.1 Authorization: Bearer abc.def "
        'X-API-Key: k123 {"refresh_token": "r.1", "status_code": 200} eyJh.eyJp.c2ln acs_zzzzzzzzzz'
    )
    assert redact(line) == (
        f"GET /x?next=/home&key={REDACTED}&state=s1&code={REDACTED} Authorization: Bearer "
        f'{REDACTED} X-API-Key: {REDACTED} {{"refresh_token": "{REDACTED}", "status_code": 200}} '
        f"{REDACTED} acs_{REDACTED}"
    )


def test_the_filter_redacts_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("appleconnect.test.redaction")
    caplog.handler.addFilter(RedactSecrets())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info('%s - "%s %s" %d', "127.0.0.1", "GET", "/a?cookie=acs_secretsecret", 200)
        try:
            raise ValueError("bad token=acl_secretsecret")
        except ValueError:
            logger.exception("failed on %s", "/b?handoff=ach_secretsecret")
    text = caplog.text
    assert '"GET /a?cookie=[redacted]" 200' in text
    assert "/b?handoff=[redacted]" in text
    assert "token=[redacted]" in text
    assert "secretsecret" not in text


def test_installed_redaction_reaches_records_of_every_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    previous = logging.getLogRecordFactory()
    try:
        install_log_redaction()
        install_log_redaction()  # idempotent
        with caplog.at_level(logging.INFO, logger="uvicorn.access"):
            logging.getLogger("uvicorn.access").info(
                '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/?key=ack_abcdefghij", "1.1", 200
            )
    finally:
        logging.setLogRecordFactory(previous)
    assert caplog.records[-1].getMessage() == f'127.0.0.1:1 - "GET /?key={REDACTED} HTTP/1.1" 200'


async def test_api_key_and_session_in_headers(env: Env) -> None:
    by_header = await env.http.get("/api/apple_request_auth", headers={"X-API-Key": env.api_key})
    assert by_header.status_code == 200, by_header.text
    by_parameter = await env.http.get(f"/api/apple_request_auth?key={env.api_key}")
    assert by_parameter.status_code == 200
    differ = await env.http.get(
        f"/api/apple_request_auth?key={env.api_key}", headers={"X-API-Key": "ack_other"}
    )
    assert (differ.status_code, differ.json()["error"], differ.json()["field"]) == (
        400,
        "invalid_parameter",
        "key",
    )
    wrong = await env.http.get("/api/apple_request_auth", headers={"X-API-Key": "ack_nope"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_key")
    schema = (await env.http.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The API key (preferred).",
    }
    assert schemes["sessionBearer"]["scheme"] == "bearer"
    assert schemes["apiKeyParameter"]["in"] == "query"
    operation = schema["paths"]["/api/apple_connect"]["post"]
    assert {"apiKeyHeader": []} in operation["security"]
    assert {"apiKeyParameter": []} in operation["security"]
    info = schema["paths"]["/api/get_currentuserinfo"]["get"]
    assert {"sessionBearer": []} in info["security"]
