"""``GET /emulator/credentials``: the content of credentials.json, ``base_url`` included.

The route answers where clients reach the emulator (its configured base URL, mount prefix
included), the same value ``credentials.json`` and the banner name; a forged ``Host`` header
does not change it.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from emulator_helpers import BASE

from appleconnect.emulator import create_emulator_app
from appleconnect.sandbox import build_sandbox_app


async def test_credentials_route_names_the_base_url(client: httpx.AsyncClient) -> None:
    answer = await client.get("/emulator/credentials")
    assert answer.status_code == 200
    assert answer.json()["base_url"] == BASE
    forged = await client.get("/emulator/credentials", headers={"Host": "evil.example"})
    assert forged.json()["base_url"] == BASE


async def test_credentials_route_equals_credentials_json(tmp_path: Path) -> None:
    base = "http://127.0.0.1:8123"
    app = create_emulator_app(state_dir=tmp_path, base_url=base)
    try:
        written = app.state.emulator.write_credentials(base_url=base)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as c:
            answered = (await c.get("/emulator/credentials")).json()
        assert answered == json.loads(written.read_text())
        assert answered["base_url"] == base
    finally:
        app.state.emulator.close()


async def test_mounted_emulator_names_its_prefix(tmp_path: Path) -> None:
    """In the service's sandbox mode the emulator is at ``/apple``: its base URL says so."""
    sandbox = build_sandbox_app(
        tmp_path / "data", public_url="http://127.0.0.1:8555", relay_smtp=False
    )
    async with (
        sandbox.app.router.lifespan_context(sandbox.app),
        httpx.AsyncClient(transport=sandbox.transport, base_url="http://127.0.0.1:8555") as c,
    ):
        answer = await c.get("/apple/emulator/credentials")
    assert answer.status_code == 200
    assert answer.json()["base_url"] == "http://127.0.0.1:8555/apple"
    # And the client id the service is configured with is the one the emulator hands out.
    assert sandbox.settings.client_id in answer.json()["client_ids"]
