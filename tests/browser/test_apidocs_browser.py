"""``/docs`` in Chromium with the network limited to loopback: Swagger UI renders the API's
operations from the installed files alone, breaks no rule of the page's Content-Security-Policy,
and "Try it out" calls the service with an API key given in "Authorize"."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from browser_helpers import Site
from playwright.sync_api import expect

from appleconnect.server import store
from appleconnect.server.db import create_engine, session_factory

LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}


def _api_key(site: Site) -> str:
    async def make() -> str:
        engine = create_engine(site.sandbox.settings)
        try:
            async with session_factory(engine)() as db:
                raw = await store.create_api_key(db=db, name="docs page")
                await db.commit()
        finally:
            await engine.dispose()
        return raw

    # Playwright's sync API keeps an event loop in this thread: run ours in another.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, make()).result(timeout=30)


def _loopback_only(page: Any) -> tuple[list[str], list[str]]:
    """Abort every request that would leave loopback; collect them and the console's
    Content-Security-Policy complaints."""
    outside: list[str] = []
    refused: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith("data:") or urlsplit(url).hostname in LOOPBACK:
            r.continue_()
            return
        outside.append(url)
        r.abort()

    page.context.route("**/*", route)
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return outside, refused


def test_docs_render_the_api_offline_and_try_it_out(page: Any, site: Site) -> None:
    outside, refused = _loopback_only(page)
    loaded: list[str] = []
    page.on("response", lambda r: loaded.append(f"{r.status} {urlsplit(r.url).path}"))
    page.goto(f"{site.url}/docs")
    expect(page.locator(".opblock-summary-path", has_text="/api/apple_connect")).to_be_visible()
    for path in ("/api/apple_request_auth", "/api/validate_auth_cookie", "/api/logout"):
        expect(page.get_by_text(path, exact=True).first).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("Apple Connect")
    assert "200 /openapi.json" in loaded
    assert "200 /docs/assets/swagger-ui-bundle.js" in loaded

    # "Authorize" with the API key, then "Try it out" on GET /api/apple_request_auth.
    page.get_by_role("button", name=re.compile("Authorize")).first.click()
    dialog = page.locator(".dialog-ux")
    dialog.locator("input").first.fill(_api_key(site))  # apiKeyHeader: X-API-Key
    dialog.get_by_role("button", name="Apply credentials").first.click()
    dialog.get_by_role("button", name="Close").first.click()
    operation = page.locator("#operations-default-apple_request_auth_get")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    answer = operation.locator(".live-responses-table tbody td.response-col_status").first
    expect(answer).to_have_text("200")
    expect(operation.locator(".live-responses-table")).to_contain_text('"status": "ok"')

    assert outside == [], "the page reached beyond loopback"
    assert refused == [], "the page broke its Content-Security-Policy"
