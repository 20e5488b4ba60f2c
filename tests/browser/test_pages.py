"""What a visitor and a site owner click, in a real headless Chromium against real uvicorn."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from browser_helpers import Site

from appleconnect import InvalidClient

NEW_ACCOUNT = "new.tester@example.com"


def expect_text(page: Any, text: str) -> None:
    page.get_by_text(text).first.wait_for()


def no_horizontal_scroll(page: Any) -> bool:
    # Against the viewport's own width: on a phone (is_mobile), a page wider than the screen
    # widens window.innerWidth with it instead of scrolling.
    width = page.viewport_size["width"]
    return bool(page.evaluate("w => document.documentElement.scrollWidth <= w + 1", width))


def wider_than_the_viewport(page: Any) -> list[str]:
    """Elements that reach past the right edge of the viewport (tag#id.class: right edge)."""
    return list(
        page.evaluate(
            """w => [...document.querySelectorAll("body *")]
              .filter(el => el.getBoundingClientRect().right > w + 0.5)
              .map(el => `${el.tagName.toLowerCase()}#${el.id}.${el.className}: `
                         + `${el.getBoundingClientRect().right}`)""",
            page.viewport_size["width"],
        )
    )


def sign_in_from_demo(page: Any, site: Site) -> None:
    page.goto(site.url + "/")
    page.get_by_role("link", name="Sign in with Apple").click()
    page.get_by_role("heading", name="Sign in with Apple").wait_for()


def admin_login(page: Any, site: Site) -> None:
    page.goto(site.admin_link())
    page.get_by_role("button", name="Continue to the admin panel").click()
    page.get_by_role("heading", name="Overview").wait_for()


def test_demo_sign_in_with_hidden_email_sign_out_and_the_name_is_kept(
    page: Any, site: Site, screenshots: Path
) -> None:
    page.goto(site.url + "/")
    assert page.title()
    page.screenshot(path=str(screenshots / "demo-signed-out.png"))
    sign_in_from_demo(page, site)
    assert "Emulator" in page.locator(".banner").inner_text()
    page.get_by_label("li.wei@example.com").check()
    page.get_by_label("First name").fill("Wei")
    page.get_by_label("Last name").fill("Li")
    page.get_by_label("Hide My Email").check()
    page.screenshot(path=str(screenshots / "consent.png"), full_page=True)
    page.get_by_role("button", name="Continue").click()
    expect_text(page, "You are signed in.")
    body = page.locator("dl").inner_text()
    assert "Wei Li" in body
    assert re.search(r"[a-z0-9]{10}@privaterelay\.appleid\.com", body), body
    assert "Hide My Email relay" in body
    page.screenshot(path=str(screenshots / "demo-signed-in.png"), full_page=True)

    page.get_by_role("button", name="Sign out").click()
    expect_text(page, "You are signed out.")
    # Apple sends the name only the first time: the service must have kept it.
    sign_in_from_demo(page, site)
    assert page.get_by_label("First name").count() == 1  # the page asks, but Apple won't resend
    page.get_by_label("li.wei@example.com").check()
    page.get_by_role("button", name="Continue").click()
    expect_text(page, "You are signed in.")
    assert "Wei Li" in page.locator("dl").inner_text()


def test_cancel_with_the_keyboard_returns_with_a_message(page: Any, site: Site) -> None:
    page.goto(site.url + "/")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "sign-in-with-apple":
            break
    else:
        raise AssertionError("the sign-in button is not reachable with Tab")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Cancel").click()
    expect_text(page, "Sign in with Apple was cancelled.")
    assert page.get_by_role("link", name="Sign in with Apple").is_visible()


def test_pages_fit_a_phone(browser: Any, site: Site, screenshots: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(site.url + "/")
        assert no_horizontal_scroll(page)
        sign_in_from_demo(page, site)
        assert no_horizontal_scroll(page)
        admin_login(page, site)
        for path in ("/admin/apple", "/admin/users", "/admin/embed"):
            page.goto(site.url + path)
            assert no_horizontal_scroll(page), path
        page.goto(site.url + "/admin/apple")
        page.screenshot(path=str(screenshots / "admin-phone.png"))
    finally:
        context.close()


def test_admin_changes_the_default_role_and_the_next_new_user_gets_it(
    page: Any, site: Site, screenshots: Path
) -> None:
    admin_login(page, site)
    page.get_by_role("link", name="New users").click()
    page.get_by_role("heading", name="New users").wait_for()
    page.get_by_label("Default role of new users").select_option("administrator")
    page.get_by_role("button", name="Save new-user settings").click()
    expect_text(page, "Saved.")
    try:
        visitor = page.context.browser.new_context()
        try:
            demo = visitor.new_page()
            sign_in_from_demo(demo, site)
            demo.get_by_label("Create a new test Apple ID").check()
            demo.get_by_label("Email of the new Apple ID").fill(NEW_ACCOUNT)
            demo.get_by_label("First name").fill("Nia")
            demo.get_by_label("Last name").fill("Tester")
            demo.get_by_role("button", name="Continue").click()
            expect_text(demo, "You are signed in.")
            assert "administrator" in demo.locator("dl").inner_text()
        finally:
            visitor.close()
        page.get_by_role("link", name="Users", exact=True).click()
        page.get_by_label("Search by email, name or Apple user id (sub)").fill("nia")
        page.get_by_role("button", name="Search").click()
        expect_text(page, NEW_ACCOUNT)
        page.screenshot(path=str(screenshots / "admin-users.png"), full_page=True)
        page.get_by_role("link", name="Audit log").click()
        expect_text(page, "admin.new_users_changed")
    finally:
        page.goto(site.url + "/admin/import")  # the page's old URL leads to it
        assert page.url == site.url + "/admin/new-users"
        page.get_by_label("Default role of new users").select_option("subscriber")
        page.get_by_role("button", name="Save new-user settings").click()
        expect_text(page, "Saved.")


def test_verify_settings_passes_and_fails_with_a_wrong_key_id(
    page: Any, site: Site, screenshots: Path
) -> None:
    admin_login(page, site)
    page.get_by_role("link", name="Verify settings").click()
    page.get_by_role("button", name="Verify settings").click()
    expect_text(page, "Settings verified")
    page.screenshot(path=str(screenshots / "admin-verify.png"), full_page=True)

    page.get_by_role("link", name="Apple settings").click()
    key_id = page.get_by_label("Key ID").input_value()
    assert page.locator("#key-fingerprint").inner_text()
    page.screenshot(path=str(screenshots / "admin-apple-settings.png"), full_page=True)
    try:
        page.get_by_label("Key ID").fill("WRONGKEY12")
        page.get_by_role("button", name="Save Apple settings").click()
        expect_text(page, "Saved.")
        page.get_by_role("link", name="Verify settings").click()
        page.get_by_role("button", name="Verify settings").click()
        expect_text(page, "Verification failed.")
        text = page.locator("main").inner_text()
        assert "invalid_client" in text
        # Every cause of the library's one list, in its order.
        positions = [text.index(cause) for cause in InvalidClient.likely_causes]
        assert positions == sorted(positions)
    finally:
        page.goto(site.url + "/admin/apple")
        page.get_by_label("Key ID").fill(key_id)
        page.get_by_role("button", name="Save Apple settings").click()
        expect_text(page, "Saved.")


def test_embed_script_popup_on_another_origin(page: Any, site: Site) -> None:
    admin_login(page, site)
    page.get_by_role("link", name="Buttons & embedding").click()
    assert page.locator("#preview").get_attribute("src").startswith("/buttons/apple")
    page.get_by_label("Allowed origins").fill(site.other_url)
    page.get_by_role("button", name="Save allowed origins").click()
    expect_text(page, "Saved.")

    page.goto(site.other_url + "/embed.html")
    button = page.get_by_role("button", name="Sign in with Apple")
    with page.expect_popup() as popup_info:
        button.click()
    popup = popup_info.value
    popup.get_by_role("heading", name="Sign in with Apple").wait_for()
    popup.get_by_label("sam.okafor@example.com").check()
    popup.get_by_role("button", name="Continue").click()
    page.wait_for_function("document.getElementById('result').textContent.length > 0")
    result = json.loads(page.locator("#result").inner_text())
    assert result["status"] == "ok", result
    assert result["user"]["email"] == "sam.okafor@example.com"
    assert result["cookie"].startswith("acs_")


def test_appleid_auth_js_popup_flow(page: Any, site: Site) -> None:
    page.goto(site.other_url + "/appleid.html")
    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Sign in with Apple").click()
    popup = popup_info.value
    popup.get_by_label("maria.ruiz@example.com").check()
    popup.get_by_role("button", name="Continue").click()
    page.wait_for_function("document.getElementById('result').textContent.length > 0")
    result = json.loads(page.locator("#result").inner_text())
    authorization = result["ok"]["authorization"]
    assert authorization["state"] == "state-from-meta"
    assert authorization["code"]
    assert authorization["id_token"].count(".") == 2
    assert result["ok"]["user"]["email"] == "maria.ruiz@example.com"

    # Cancel in the popup rejects with Apple's error code.
    page.locator("#result").evaluate("el => el.textContent = ''")
    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Sign in with Apple").click()
    popup_info.value.get_by_role("button", name="Cancel").click()
    page.wait_for_function("document.getElementById('result').textContent.length > 0")
    failed = json.loads(page.locator("#result").inner_text())
    assert failed == {"failed": {"error": "user_cancelled_authorize"}}


def test_consent_form_mistake_shows_the_error_beside_the_field_and_keeps_the_answers(
    page: Any, site: Site, screenshots: Path
) -> None:
    sign_in_from_demo(page, site)
    page.get_by_label("Create a new test Apple ID").check()
    page.get_by_label("Email of the new Apple ID").fill("a@b")  # type=email lets it through
    page.get_by_label("First name").fill("Ada")
    page.get_by_label("Last name").fill("Byron")
    page.get_by_label("Hide My Email").check()
    page.get_by_role("button", name="Continue").click()

    email = page.get_by_label("Email of the new Apple ID")
    page.locator("#new_email-error").wait_for()
    assert page.locator("#new_email-error").inner_text() == "'a@b' is not an email address."
    assert email.get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "new_email"
    assert page.get_by_role("alert").inner_text().startswith("Nothing was sent yet")
    # The error is beside the field: just below it, not somewhere else on the page.
    field_box, error_box = email.bounding_box(), page.locator("#new_email-error").bounding_box()
    assert 0 <= error_box["y"] - (field_box["y"] + field_box["height"]) < 30
    assert email.input_value() == "a@b"
    assert page.get_by_label("Create a new test Apple ID").is_checked()
    assert page.get_by_label("First name").input_value() == "Ada"
    assert page.get_by_label("Last name").input_value() == "Byron"
    assert page.get_by_label("Hide My Email").is_checked()
    page.screenshot(path=str(screenshots / "consent-mistake.png"), full_page=True)

    email.fill("ada.byron@example.com")
    page.get_by_role("button", name="Continue").click()
    expect_text(page, "You are signed in.")
    body = page.locator("dl").inner_text()
    assert "Ada Byron" in body
    assert "Hide My Email relay" in body


def test_demo_buttons_are_styled_and_deleting_asks_first(
    page: Any, site: Site, screenshots: Path
) -> None:
    sign_in_from_demo(page, site)
    page.get_by_label("Create a new test Apple ID").check()
    page.get_by_label("Email of the new Apple ID").fill("del.ete@example.com")
    page.get_by_role("button", name="Continue").click()
    expect_text(page, "You are signed in.")
    sign_out = page.get_by_role("button", name="Sign out")
    delete = page.get_by_role("link", name="Delete my account…")
    style = "el => ['borderRadius', 'fontSize', 'paddingLeft'].map(p => getComputedStyle(el)[p])"
    assert sign_out.evaluate(style) == ["8px", "16px", "19.2px"]  # not the browser's default
    assert delete.evaluate(style) == sign_out.evaluate(style)
    assert delete.evaluate("el => getComputedStyle(el).color") == "rgb(176, 0, 32)"
    assert abs(sign_out.bounding_box()["height"] - delete.bounding_box()["height"]) < 1

    delete.click()
    page.get_by_role("heading", name="Delete your account?").wait_for()
    assert "revokes this app's access to your Apple ID at Apple" in page.locator("ul").inner_text()
    assert "del.ete@example.com" in page.locator("body").inner_text()
    page.screenshot(path=str(screenshots / "demo-delete.png"), full_page=True)
    page.get_by_role("link", name="Keep my account").click()
    expect_text(page, "You are signed in.")  # nothing was deleted

    page.get_by_role("link", name="Delete my account…").click()
    page.get_by_role("button", name="Delete my account").click()
    expect_text(page, "Your account was deleted.")
    assert page.get_by_role("link", name="Sign in with Apple").is_visible()
    account = site.emulator.find_account("del.ete@example.com")
    assert account is not None
    consents = site.emulator.account_json(account)["consents"]
    assert consents == [], consents  # revoked at "Apple": the next sign-in asks again


def test_signed_in_demo_page_fits_a_phone(browser: Any, site: Site, screenshots: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        sign_in_from_demo(page, site)
        page.get_by_label("sam.okafor@example.com").check()
        page.get_by_role("button", name="Continue").click()
        expect_text(page, "You are signed in.")
        sub = page.locator("dd code")
        assert len(sub.inner_text()) > 40  # Apple's user id: one long word
        assert wider_than_the_viewport(page) == []
        assert no_horizontal_scroll(page)
        page.screenshot(path=str(screenshots / "demo-signed-in-phone.png"), full_page=True)
        page.get_by_role("link", name="Delete my account…").click()
        page.get_by_role("heading", name="Delete your account?").wait_for()
        assert wider_than_the_viewport(page) == []
    finally:
        context.close()


def test_a_used_login_link_says_so_before_the_click(page: Any, site: Site) -> None:
    link = site.admin_link()
    page.goto(link)
    page.get_by_role("button", name="Continue to the admin panel").click()
    page.get_by_role("heading", name="Overview").wait_for()
    page.context.clear_cookies()

    answer = page.goto(link)
    assert answer.status == 410
    alert = page.get_by_role("alert")
    assert alert.inner_text() == (
        "This login link was already used: each link opens one admin session."
    )
    assert page.get_by_role("button", name="Continue to the admin panel").count() == 0
    command = page.locator("pre code")
    assert command.inner_text() == "appleconnect admin login-link --data-dir DIR"
    assert command.evaluate("el => getComputedStyle(el).fontFamily").startswith("ui-monospace")
    assert "`" not in page.locator("main").inner_text()


def test_a_new_api_key_has_a_copy_button(page: Any, site: Site, screenshots: Path) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    admin_login(page, site)
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("copy test")
    page.get_by_role("button", name="Create API key").click()
    key = page.get_by_label("The new key").input_value()
    assert len(key) > 40
    page.get_by_role("button", name="Copy the key").click()
    expect_text(page, "Copied to the clipboard.")
    page.screenshot(path=str(screenshots / "admin-new-api-key.png"), full_page=True)
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = page.get_by_role("row").filter(has_text="copy test")
    shown_prefix = row.locator("code").inner_text().rstrip("…")
    assert key.startswith(shown_prefix)


def test_the_copy_button_needs_javascript(browser: Any, site: Site) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        admin_login(page, site)
        page.goto(site.url + "/admin/apikeys")
        page.get_by_label("Name").fill("no script")
        page.get_by_role("button", name="Create API key").click()
        assert page.get_by_label("The new key").input_value()
        # Without JavaScript it could not copy: it is not shown; the key can be selected.
        assert page.get_by_role("button", name="Copy the key").count() == 0
    finally:
        context.close()
