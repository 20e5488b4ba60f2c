"""A real browser through the FastAPI integration and the emulator's consent page, on two sites
(the app on ``localhost``, the emulator on ``127.0.0.1``): Apple's form_post is then a cross-site
POST that carries no Lax cookie, and the sign-in is finished by the GET that follows it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from integration_helpers import account_json, serve_on_loopback

from appleconnect.integrations import AppleSignIn, MemoryStore
from appleconnect.integrations.fastapi import CurrentAppleUser, router
from appleconnect.testing import AppleEmulator

if os.environ.get("CI"):  # CI installs the dev extra: a missing Playwright is a failure there
    import playwright.sync_api as playwright_sync
else:
    playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("APPLECONNECT_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def test_sign_in_through_the_consent_page(apple_emulator: AppleEmulator, chromium: Any) -> None:
    app = FastAPI()
    app.include_router(router, prefix="/auth/apple")

    @app.get("/me")
    def me(user: CurrentAppleUser) -> dict[str, object]:
        return account_json(user)

    with serve_on_loopback(app) as loopback:
        site = loopback.replace("127.0.0.1", "localhost")  # another site than the emulator's
        callback = f"{site}/auth/apple/callback"
        apple_emulator.register_redirect_uri(callback)
        app.state.apple_sign_in = AppleSignIn(
            apple_emulator.client(in_process=False),
            redirect_uri=callback,
            store=MemoryStore(),
            encryption_key=Fernet.generate_key().decode(),
            secure_cookies=False,  # plain HTTP on loopback
        )
        context = chromium.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(f"{site}/auth/apple/start?next=/me")
            assert page.url.startswith(f"{apple_emulator.base_url}/auth/authorize")
            page.get_by_text("li.wei@example.com").click()  # choose the Apple ID
            page.click("button[value='continue']")  # form_post back to the callback
            page.wait_for_url(f"{site}/me")
            shown = page.locator("body").inner_text()
        finally:
            context.close()
    assert '"email":"li.wei@example.com"' in shown.replace(" ", "")
    assert '"name":"LiWei"' in shown.replace(" ", "")
