"""Sign-ins bound to the browser that started them, in real Chromium: Apple's consent page on
another site (``localhost`` against the service on ``127.0.0.1``), so that its form_post is a
genuine cross-site POST, and a second browser context as a second browser."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import parse_qs

from browser_helpers import Site

ACCOUNT = "maria.ruiz@example.com"


def consent_on_another_site(page: Any, site: Site) -> None:
    """Start at the service, then show Apple's consent page from another site."""
    page.goto(site.url + "/auth/apple/start?next=/")
    page.get_by_role("heading", name="Sign in with Apple").wait_for()
    page.goto(page.url.replace("//127.0.0.1:", "//localhost:", 1))
    page.get_by_label(ACCOUNT).check()


def test_after_a_cross_site_form_post_the_starting_browser_finishes(page: Any, site: Site) -> None:
    """The SameSite=Lax sign-in cookie reaches the finish: the 303 after Apple's cross-site
    POST is a top-level GET."""
    consent_on_another_site(page, site)
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("You are signed in.").first.wait_for()
    cookies = {c["name"] for c in page.context.cookies(site.url)}
    assert "appleconnect_session" in cookies
    assert not [n for n in cookies if n.startswith("appleconnect_signin_")]


def test_a_form_post_replayed_by_another_browser_signs_nobody_in(
    browser: Any, page: Any, site: Site
) -> None:
    """Login CSRF: the attacker consents with their own Apple ID, keeps Apple's form_post, and
    has the victim's browser submit it from a page of theirs. The victim's browser follows the
    callback's 303 to the finish and gets the refusal page, not the attacker's session."""
    posted: list[dict[str, str]] = []

    def keep(route: Any) -> None:
        posted.append({k: v[0] for k, v in parse_qs(route.request.post_data or "").items()})
        route.abort()

    page.route("**/auth/apple/callback", keep)
    consent_on_another_site(page, site)
    page.get_by_role("button", name="Continue").click()
    for _ in range(100):
        if posted:
            break
        page.wait_for_timeout(100)
    assert posted, "Apple's form_post never left the attacker's browser"
    assert {"code", "state"} <= set(posted[0])

    victim = browser.new_context()
    try:
        tab = victim.new_page()
        fields = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
            for k, v in posted[0].items()
        )
        tab.set_content(
            f'<form method="post" action="{site.url}/auth/apple/callback">{fields}</form>'
        )
        with tab.expect_response("**/auth/apple/finish*") as finishing:
            tab.evaluate("document.forms[0].submit()")
        assert finishing.value.status == 403  # not 303 with the attacker's session
        tab.get_by_text("started in another browser").first.wait_for()
        assert "appleconnect_session" not in {c["name"] for c in victim.cookies()}
    finally:
        victim.close()
