"""Apple's JS popup in Chromium: ``appleid.auth.js`` opens the emulator's ``/auth/authorize`` with
``response_mode=web_message``; a page on the origin of a registered redirect URI receives the
authorization, a page of another origin is refused (and never receives it, even when its browser
sends no ``Referer``)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from browser_helpers import Site
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

FOREIGN = (
    "response_mode=web_message is only for pages on the origins of the client's registered "
    "redirect URIs."
)


def appleid_page(site: Site, *, no_referrer: bool) -> str:
    team = site.emulator.default_team
    referrer = '<meta name="referrer" content="no-referrer">' if no_referrer else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A foreign page</title>{referrer}
<meta name="appleid-signin-client-id" content="{team.services_id}">
<meta name="appleid-signin-scope" content="name email">
<meta name="appleid-signin-redirect-uri" content="{site.other_url}/callback">
<meta name="appleid-signin-state" content="foreign-state">
<meta name="appleid-signin-use-popup" content="true">
</head>
<body>
<h1>A foreign page</h1>
<div id="appleid-signin" data-type="sign-in" data-width="220" data-height="40"></div>
<pre id="result"></pre>
<script src="{site.url}/apple/appleauth/static/jsapi/appleid/1/en_US/appleid.auth.js"></script>
<script>
document.addEventListener("AppleIDSignInOnSuccess", function (event) {{
  document.getElementById("result").textContent = JSON.stringify({{ok: event.detail}});
}});
document.addEventListener("AppleIDSignInOnFailure", function (event) {{
  document.getElementById("result").textContent = JSON.stringify({{failed: event.detail}});
}});
</script>
</body></html>"""


@pytest.fixture(scope="module")
def foreign(site: Site) -> Iterator[str]:
    """A third origin whose pages use Apple's JS with the service's registered redirect URI."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(appleid_page(site, no_referrer="quiet" in request.url.path))

    app = Starlette(routes=[Route("/appleid.html", page), Route("/quiet/appleid.html", page)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the foreign site's server stopped"
        assert time.monotonic() < deadline, "the foreign site did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def own_account(site: Site, name: str) -> str:
    """An Apple ID of this test's own: the other browser tests' accounts stay first-time."""
    email = f"{name}@web-message.example"
    if site.emulator.find_account(email) is None:
        site.emulator.create_account(email=email, first_name="Web", last_name="Message")
    return email


def result_of(page: Any) -> Any:
    page.wait_for_function("document.getElementById('result').textContent.length > 0")
    return json.loads(page.locator("#result").inner_text())


def test_a_page_on_the_registered_origin_gets_the_authorization(page: Any, site: Site) -> None:
    email = own_account(site, "registered")
    page.goto(site.other_url + "/appleid.html")
    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Sign in with Apple").click()
    popup = popup_info.value
    assert popup.url.startswith(f"{site.url}/apple/auth/authorize?")
    assert "response_mode=web_message" in popup.url
    assert "frame_id=" in popup.url
    popup.get_by_label(email).check()
    popup.get_by_role("button", name="Continue").click()
    result = result_of(page)
    authorization = result["ok"]["authorization"]
    assert authorization["state"] == "state-from-meta"
    assert authorization["code"].startswith("c")
    payload = authorization["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["nonce"] == "nonce-from-init"
    assert claims["aud"] == site.emulator.default_team.services_id
    assert result["ok"]["user"]["email"] == email


def test_a_page_of_another_origin_is_refused(page: Any, site: Site, foreign: str) -> None:
    page.goto(foreign + "/appleid.html")
    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Sign in with Apple").click()
    popup = popup_info.value
    popup.get_by_text(FOREIGN).wait_for()
    assert popup.get_by_role("button", name="Continue").count() == 0
    popup.close()
    assert result_of(page) == {"failed": {"error": "popup_closed_by_user"}}


def test_without_a_referer_the_foreign_page_still_never_receives_it(
    page: Any, site: Site, foreign: str
) -> None:
    email = own_account(site, "quiet")
    page.goto(foreign + "/quiet/appleid.html")
    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Sign in with Apple").click()
    popup = popup_info.value
    popup.get_by_label(email).check()
    with popup.expect_event("close"):
        popup.get_by_role("button", name="Continue").click()
    # The popup posted to the registered origin only: this page was not it.
    assert result_of(page) == {"failed": {"error": "popup_closed_by_user"}}
