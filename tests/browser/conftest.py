"""Browser tests: the sandbox served by real uvicorn on a loopback port, a second origin for the
embedding pages, and one headless Chromium (Debian's, at /usr/bin/chromium) for the session.

Screenshots go to ``artifacts/screenshots/`` (kept by CI as artifacts; not in git).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI"):  # CI installs the dev extra: a missing Playwright is a failure there
    import playwright.sync_api as playwright_sync
else:
    playwright_sync = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

from browser_helpers import Site  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import HTMLResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from appleconnect.sandbox import build_sandbox_app  # noqa: E402

CHROMIUM = os.environ.get("APPLECONNECT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
TIMEOUT_MS = 15_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThreadedServer:
    """An ASGI app under real uvicorn, in a thread, on a loopback port."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def _other_origin_app(service_url: str, services_id: str, redirect_uri: str) -> Starlette:
    """Pages of "another site" that use the service's embed script and Apple's JS API."""

    async def embed_page(_request: Any) -> HTMLResponse:
        return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Another site</title></head>
<body>
<h1>Another site</h1>
<p>The button below comes from the Apple Connect service at {service_url}.</p>
<div id="slot"></div>
<script src="{service_url}/embed.js" async data-flow="popup" data-target="#slot"
        data-callback="onAppleConnect" data-width="220" data-height="40"></script>
<pre id="result"></pre>
<script>
function onAppleConnect(detail) {{
  document.getElementById("result").textContent = JSON.stringify(detail);
}}
</script>
</body></html>""")

    async def appleid_page(_request: Any) -> HTMLResponse:
        return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Apple JS page</title>
<meta name="appleid-signin-client-id" content="{services_id}">
<meta name="appleid-signin-scope" content="name email">
<meta name="appleid-signin-redirect-uri" content="{redirect_uri}">
<meta name="appleid-signin-state" content="state-from-meta">
<meta name="appleid-signin-use-popup" content="true">
</head>
<body>
<h1>Sign in with Apple JS</h1>
<div id="appleid-signin" data-color="black" data-border="true" data-type="sign-in"
     data-width="220" data-height="40"></div>
<pre id="result"></pre>
<script src="{service_url}/apple/appleauth/static/jsapi/appleid/1/en_US/appleid.auth.js"></script>
<script>
document.addEventListener("AppleIDSignInOnSuccess", function (event) {{
  document.getElementById("result").textContent = JSON.stringify({{ok: event.detail}});
}});
document.addEventListener("AppleIDSignInOnFailure", function (event) {{
  document.getElementById("result").textContent = JSON.stringify({{failed: event.detail}});
}});
AppleID.auth.init({{ nonce: "nonce-from-init" }});
</script>
</body></html>""")

    return Starlette(
        routes=[Route("/embed.html", embed_page), Route("/appleid.html", appleid_page)]
    )


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    port, other_port = free_port(), free_port()
    url, other_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{other_port}"
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    sandbox = build_sandbox_app(data_dir, public_url=url)
    team = sandbox.emulator_app.state.emulator.default_team
    js_redirect = f"{other_url}/callback"
    sandbox.emulator_app.state.emulator.register_redirect_uri(team.services_id, js_redirect)
    other = _other_origin_app(url, team.services_id, js_redirect)
    with ThreadedServer(sandbox.app, port), ThreadedServer(other, other_port):
        yield Site(url=url, other_url=other_url, sandbox=sandbox)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module. Not session-wide: Playwright's sync API keeps an event loop
    running in this thread while it is open, which pytest-asyncio's tests elsewhere cannot share."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (CI installs Debian's chromium package)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page for each test."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS
