"""The example applications of docs/integrations.md, run as written: configured from the
environment, pointed at the emulator over loopback HTTP, signed in through the whole flow."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration_helpers import CALLBACK, ORIGIN

from appleconnect.testing import AppleEmulator

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None, f"no {name} example in docs/integrations.md"
    code = match.group(1)
    assert len(code.strip().splitlines()) <= 16, f"the {name} example grew past 15 lines"
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
