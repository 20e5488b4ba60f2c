"""The example applications of docs/integrations.md, run as written: configured from the
environment, pointed at the emulator over loopback HTTP, signed in through the whole flow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from integration_helpers import CALLBACK, ORIGIN

from appleconnect.testing import AppleEmulator

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None, f"no {name} example in docs/integrations.md"
    code = match.group(1)
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 15, f"the {name} example grew past 15 lines"
    return code


def run_example(name: str) -> Any:
    namespace: dict[str, Any] = {"__name__": f"example_{name}"}
    exec(compile(example(name), f"docs/integrations.md ({name})", "exec"), namespace)  # noqa: S102
    return namespace["app"]


@pytest.fixture
def apple_environment(apple_emulator: AppleEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    c = apple_emulator.credentials
    apple_emulator.register_redirect_uri(CALLBACK)
    for name, value in {
        "APPLE_TEAM_ID": c.team_id,
        "APPLE_KEY_ID": c.key_id,
        "APPLE_PRIVATE_KEY": c.private_key_pem,
        "APPLE_SERVICES_ID": c.services_id,
        "APPLE_APP_ID": c.app_id,
        "APPLE_REDIRECT_URI": CALLBACK,
        "APPLE_BASE_URL": apple_emulator.base_url,
        "APPLE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("apple_environment")
async def test_the_fastapi_example(apple_emulator: AppleEmulator) -> None:
    app = run_example("fastapi")
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url=ORIGIN) as browser,
        httpx.AsyncClient(transport=transport, base_url=ORIGIN) as apple_side,
    ):
        assert (await browser.get("/")).status_code == 401
        started = await browser.get("/auth/apple/start")
        assert started.headers["location"].startswith(f"{apple_emulator.base_url}/auth/authorize")
        signed = apple_emulator.authorize(started.headers["location"], name="Ana Ruiz")
        posted = await apple_side.post("/auth/apple/callback", data=signed.form)
        await browser.get(posted.headers["location"])
        assert (await browser.get("/")).json() == {"hello": "Ana Ruiz"}
    app.state.apple_sign_in.client.close()


@pytest.mark.usefixtures("apple_environment")
def test_the_flask_example(apple_emulator: AppleEmulator) -> None:
    app = run_example("flask")
    browser, apple_side = app.test_client(), app.test_client()
    assert browser.get("/").status_code == 401
    started = browser.get("/auth/apple/start")
    signed = apple_emulator.authorize(started.headers["Location"], "li.wei@example.com")
    posted = apple_side.post("/auth/apple/callback", data=signed.form)
    browser.get(posted.headers["Location"])
    assert browser.get("/").json == {"hello": "Li Wei"}
    app.extensions["appleconnect"].client.close()


def test_every_cell_of_the_comparison_table_names_a_test_that_exists() -> None:
    table = DOC.read_text().split("## What each covers", 1)[1]
    here = Path(__file__).resolve().parent
    cited = 0
    for row in table.splitlines():
        current = None
        for file, name in re.findall(r"`(test_\w+\.py)?::(\w+)`", row):
            current = file or current
            assert current is not None, row
            assert re.search(rf"^(async )?def {name}\(", (here / current).read_text(), re.M), name
            cited += 1
    assert cited >= 12


SERVE_DJANGO = """
import os, sys, wsgiref.simple_server
server = wsgiref.simple_server.make_server("127.0.0.1", 0, None)
base = f"http://127.0.0.1:{server.server_port}"
os.environ["APPLE_REDIRECT_URI"] = f"{base}/auth/apple/callback"
sys.path.insert(0, os.getcwd())
import example_django
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
call_command("migrate", verbosity=0)
server.set_app(get_wsgi_application())
print(base, flush=True)
server.serve_forever()
"""


@pytest.mark.usefixtures("apple_environment")
def test_the_django_example_over_http(apple_emulator: AppleEmulator, tmp_path: Path) -> None:
    (tmp_path / "example_django.py").write_text(example("django"))
    environment = {**os.environ, "DJANGO_SECRET_KEY": "example-" + "k" * 50}
    environment["APPLE_INSECURE_COOKIES"] = "1"  # plain HTTP on loopback
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE_DJANGO],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:"), "the example did not start"
        apple_emulator.register_redirect_uri(f"{base}/auth/apple/callback")
        with httpx.Client(base_url=base) as browser, httpx.Client(base_url=base) as apple_side:
            assert browser.get("/").json() == {"hello": None}
            started = browser.get("/auth/apple/start")
            signed = apple_emulator.authorize(started.headers["location"], name="Sam Okafor")
            posted = apple_side.post("/auth/apple/callback", data=signed.form)
            assert posted.status_code == 303, posted.text
            browser.get(posted.headers["location"])
            assert browser.get("/").json() == {"hello": "Sam Okafor"}
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
