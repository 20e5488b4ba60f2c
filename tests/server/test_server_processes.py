"""Two service processes on one PostgreSQL, with the emulator as a third process: a sign-in
started on one completes on the other (nothing shared lives in one process's memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.fernet import Fernet
from server_helpers import free_port, wait_for

pytestmark = pytest.mark.slow
KEY_LIMIT = 10


@pytest.fixture
def processes(tmp_path: Path, pg_url: str) -> Iterator[dict[str, object]]:
    started: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    try:
        apple_port, a_port, b_port = free_port(), free_port(), free_port()
        apple = f"http://127.0.0.1:{apple_port}"
        state_dir = tmp_path / "emulator"
        emulator = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from appleconnect.emulator import serve; "
                "serve(host='127.0.0.1', port=int(sys.argv[1]), state_dir=Path(sys.argv[2]), "
                "issuer=None, control_api=True)",
                str(apple_port),
                str(state_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(emulator)
        wait_for(apple + "/auth/keys", emulator)
        creds = json.loads((state_dir / "credentials.json").read_text())
        public = f"http://127.0.0.1:{a_port}"  # both sit behind one public URL
        registered = httpx.post(
            f"{apple}/emulator/clients/{creds['services_id']}/redirect-uris",
            json={"uri": public + "/auth/apple/callback"},
        )
        assert registered.status_code < 300, registered.text
        env = {
            **os.environ,
            "APPLECONNECT_MODE": "sandbox",
            "APPLECONNECT_PUBLIC_URL": public,
            "APPLECONNECT_DATABASE_URL": pg_url,
            "APPLECONNECT_APPLE_BASE_URL": apple,
            "APPLECONNECT_TEAM_ID": creds["team_id"],
            "APPLECONNECT_KEY_ID": creds["key_id"],
            "APPLECONNECT_PRIVATE_KEY": creds["private_key_pem"],
            "APPLECONNECT_CLIENT_ID": creds["services_id"],
            "APPLECONNECT_APP_IDS": creds["app_id"],
            "APPLECONNECT_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "APPLECONNECT_RATE_LIMIT_PER_KEY": str(KEY_LIMIT),
            "APPLECONNECT_RATE_LIMIT_WINDOW": "86400",
            # Counts merged in the database every 0.1 s (the default is 1 s): see below.
            "APPLECONNECT_RATE_LIMIT_SYNC": "0.1",
        }
        for port, name in ((a_port, "a"), (b_port, "b")):
            logs.append((tmp_path / f"{name}.log").open("wb"))
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from pathlib import Path; from appleconnect.sandbox import serve; "
                    "serve(host='127.0.0.1', port=int(sys.argv[1]), data_dir=Path(sys.argv[2]), "
                    "config=None)",
                    str(port),
                    str(tmp_path / name),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=logs[-1],
            )
            started.append(proc)
        for port, proc in ((a_port, started[1]), (b_port, started[2])):
            wait_for(f"http://127.0.0.1:{port}/healthz", proc)
        key = (tmp_path / "a" / "demo-api-key.txt").read_text().strip()
        yield {
            "apple": apple,
            "a": f"http://127.0.0.1:{a_port}",
            "b": f"http://127.0.0.1:{b_port}",
            "key": key,
            "creds": creds,
        }
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


def consent(apple: str, url: str, account: str) -> dict[str, str]:
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    response = httpx.post(f"{apple}/emulator/authorize", json={**query, "account": account})
    assert response.status_code == 200, response.text
    return {k: v for k, v in response.json()["params"].items() if v is not None}


def test_sign_in_started_on_one_process_completes_on_the_other(
    processes: dict[str, object],
) -> None:
    apple, a, b, key = (str(processes[k]) for k in ("apple", "a", "b", "key"))
    # The API key's rate-limit window is a UTC day (set below). Less than a minute before
    # midnight, wait for the new day (bounded), so that every counted call falls into one window.
    to_midnight = 86400 - time.time() % 86400
    if to_midnight < 60:
        time.sleep(to_midnight + 0.5)
    # Web flow: start on A, Apple's POST lands on B, the finishing GET on A.
    start = httpx.get(f"{a}/auth/apple/start", params={"next": "/done"})
    assert start.status_code == 303
    form = consent(apple, start.headers["location"], "maria.ruiz@example.com")
    callback = httpx.post(f"{b}/auth/apple/callback", data=form)
    assert callback.status_code == 303, callback.text
    # The finish needs the browser's sign-in cookie from the start.
    finish = httpx.get(a + callback.headers["location"], cookies=start.cookies)
    assert finish.status_code == 303
    assert finish.headers["location"] == "/done"
    cookie = finish.cookies["appleconnect_session"]
    info = httpx.get(f"{b}/api/get_currentuserinfo", params={"cookie": cookie})
    assert info.status_code == 200, info.text
    assert info.json()["user"]["email"] == "maria.ruiz@example.com"
    # The state is single-use across processes.
    replay = httpx.post(f"{a}/auth/apple/callback", data=form)
    assert replay.status_code == 400

    # REST: apple_request_auth on B, apple_connect on A.
    issued = httpx.get(f"{b}/api/apple_request_auth", params={"key": key}).json()
    form = consent(apple, issued["url"], "li.wei@example.com")
    connect = httpx.post(
        f"{a}/api/apple_connect", data={"key": key, "code": form["code"], "state": issued["state"]}
    )
    assert connect.status_code == 200, connect.text
    assert connect.json()["email"] == "li.wei@example.com"

    # The API key's rate limit is one count in the database for both processes: 2 calls so
    # far, then alternate until 429 (all within one day-long window: see the top of the test).
    # Each process merges its counts into the database's within rate_limit_sync; with pauses
    # longer than that, the shared count is exact.
    allowed = 2
    for i in range(KEY_LIMIT + 2):
        time.sleep(0.3)
        response = httpx.get(f"{(a, b)[i % 2]}/api/apple_request_auth", params={"key": key})
        if response.status_code == 429:
            break
        assert response.status_code == 200, response.text
        allowed += 1
    assert allowed == KEY_LIMIT
    assert response.json()["error"] == "rate_limited"
    assert response.json()["field"] == "key"
    assert 0 < int(response.headers["retry-after"]) <= 86400
