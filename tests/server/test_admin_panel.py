"""The admin panel through HTTP (no browser): login link, CSRF, settings applied at once and in
other processes, Verify settings, users, API keys, audit log, outbox, buttons and embedding."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from markupsafe import escape
from server_helpers import PUBLIC_URL, Env
from sqlalchemy import select

from appleconnect import InvalidClient
from appleconnect.sandbox import build_sandbox_app
from appleconnect.server import Settings, store
from appleconnect.server.admin import auth as admin_auth
from appleconnect.server.live_settings import LiveSettings
from appleconnect.server.models import AuditEvent, SettingValue, User, utcnow

MARIA = "maria.ruiz@example.com"


async def login(env: Env) -> str:
    """Sign in to the admin panel with a one-time link; returns the CSRF token of the session."""
    async with env.service.sessions() as db:
        token = await store.create_admin_login(db=db, ttl=60)
        await db.commit()
    page = await env.http.get("/admin/login", params={"token": token})
    assert page.status_code == 200
    assert "Continue to the admin panel" in page.text
    response = await env.http.post("/admin/login", data={"token": token})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/admin"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/admin" in cookie
    overview = await env.http.get("/admin")
    assert overview.status_code == 200
    return csrf_of(overview.text)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def events(env: Env, prefix: str) -> list[AuditEvent]:
    async with env.service.sessions() as db:
        rows = (await db.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    return [e for e in rows if e.event.startswith(prefix)]


async def test_the_login_link_works_once_and_pages_need_it(env: Env) -> None:
    assert (await env.http.get("/admin")).status_code == 401
    assert (await env.http.get("/admin/users")).status_code == 401
    async with env.service.sessions() as db:
        token = await store.create_admin_login(db=db, ttl=60)
        await db.commit()
    first = await env.http.post("/admin/login", data={"token": token})
    assert first.status_code == 303
    env.http.cookies.clear()
    again = await env.http.post("/admin/login", data={"token": token})
    assert again.status_code == 410
    assert "This login link was already used" in again.text
    assert (await env.http.get("/admin")).status_code == 401


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("used", 410, "This login link was already used: each link opens one admin session."),
        # Made for an hour, two hours ago: its own lifetime, not the setting's (15 minutes).
        ("expired", 410, "This login link has expired: it worked for 60 minutes after it was"),
        ("unknown", 404, "This login link is not one this service made: it may be cut short"),
    ],
)
async def test_a_link_that_cannot_be_used_says_so_before_the_click(
    env: Env, kind: str, status: int, message: str
) -> None:
    async with env.service.sessions() as db:
        if kind == "expired":
            made = utcnow() - dt.timedelta(hours=2)
            token = await store.create_admin_login(db=db, ttl=3600, now=made)
        else:
            token = await store.create_admin_login(db=db, ttl=60)
        await db.commit()
    if kind == "used":
        assert (await env.http.post("/admin/login", data={"token": token})).status_code == 303
        env.http.cookies.clear()
    elif kind == "unknown":
        token = token[:-5]
    shown = await env.http.get("/admin/login", params={"token": token})
    assert shown.status_code == status
    assert message in shown.text
    assert "Continue to the admin panel" not in shown.text
    assert "`" not in shown.text
    assert (
        '<pre><code id="login-link-command">appleconnect admin login-link --data-dir DIR'
        "</code></pre>" in shown.text
    )
    if kind == "expired":
        async with env.service.sessions() as db:  # showing the page did not use the link
            assert (await store.admin_login_link(db=db, raw=token))[0] == "expired"


async def test_showing_a_fresh_link_does_not_use_it(env: Env) -> None:
    async with env.service.sessions() as db:
        token = await store.create_admin_login(db=db, ttl=60)
        await db.commit()
    for _ in range(2):  # a mail scanner's fetch, then the person's
        shown = await env.http.get("/admin/login", params={"token": token})
        assert shown.status_code == 200
        assert "Continue to the admin panel" in shown.text
    assert (await env.http.post("/admin/login", data={"token": token})).status_code == 303


async def test_forms_refuse_a_missing_csrf_token_and_another_origin(env: Env) -> None:
    csrf = await login(env)
    no_token = await env.http.post("/admin/apikeys", data={"name": "x"})
    assert no_token.status_code == 403
    wrong = await env.http.post("/admin/apikeys", data={"name": "x", "csrf": "0" * 64})
    assert wrong.status_code == 403
    cross = await env.http.post(
        "/admin/apikeys",
        data={"name": "x", "csrf": csrf},
        headers={"origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    # Same host, another scheme: another origin (a plain-HTTP page anyone on the path can write).
    other_scheme = await env.http.post(
        "/admin/apikeys",
        data={"name": "x", "csrf": csrf},
        headers={"origin": "https://127.0.0.1:8000"},
    )
    assert other_scheme.status_code == 403
    same = await env.http.post(
        "/admin/apikeys",
        data={"name": "x", "csrf": csrf},
        headers={"origin": "http://127.0.0.1:8000"},
    )
    assert same.status_code == 200
    ok = await env.http.post("/admin/apikeys", data={"name": "x", "csrf": csrf})
    assert ok.status_code == 200


async def test_default_role_change_applies_to_the_next_new_user_and_is_audited(env: Env) -> None:
    csrf = await login(env)
    form = {
        "csrf": csrf,
        "default_role": "administrator",
        "mail_from": "",
        "welcome_subject": "Welcome",
        "smtp_host": "",
        "smtp_port": "587",
        "smtp_security": "starttls",
        "smtp_username": "",
    }
    saved = await env.http.post("/admin/new-users", data=form)
    assert saved.status_code == 303, saved.text
    assert env.settings.default_role == "administrator"
    await env.web_sign_in(account=MARIA)
    async with env.service.sessions() as db:
        user = await db.scalar(select(User).where(User.email == MARIA))
    assert user is not None
    assert user.role == "administrator"
    changes = await events(env, "admin.new_users_changed")
    assert changes[-1].actor == "admin"
    assert "administrator" in changes[-1].detail
    bad = await env.http.post("/admin/new-users", data={**form, "default_role": "root"})
    assert bad.status_code == 400
    assert "Choose one of the roles" in bad.text


async def test_the_new_users_page_kept_its_old_user_import_urls(env: Env) -> None:
    csrf = await login(env)
    shown = await env.http.get("/admin/new-users")
    assert "<h1>New users</h1>" in shown.text
    assert '<a href="/admin/new-users" aria-current="page">New users</a>' in shown.text
    assert "User import" not in shown.text
    for old, new in (
        ("/admin/import", "/admin/new-users"),
        ("/admin/import?done=saved", "/admin/new-users?done=saved"),
        ("/admin/import/test-email", "/admin/new-users/test-email"),
    ):
        for method in ("GET", "POST"):
            moved = await env.http.request(method, old)
            assert (moved.status_code, moved.headers["location"]) == (308, new), (method, old)
    # A form posted to the old URL (a page loaded before the upgrade) is posted again, and saved.
    form = {"csrf": csrf, "default_role": "administrator", "smtp_port": "587"}
    saved = await env.http.post("/admin/import", data={**form, "smtp_security": "starttls"})
    again = await env.http.post(
        saved.headers["location"],
        content=saved.request.content,
        headers={"content-type": saved.request.headers["content-type"]},
    )
    assert again.status_code == 303
    assert env.settings.default_role == "administrator"


async def make_new_users_administrators(env: Env, csrf: str) -> httpx.Response:
    """Save the panel's "New users" form: default role administrator, subject "Hi"."""
    return await env.http.post(
        "/admin/new-users",
        data={
            "csrf": csrf,
            "default_role": "administrator",
            "welcome_subject": "Hi",
            "smtp_port": "587",
            "smtp_security": "starttls",
        },
    )


class SlowCheck:
    """``LiveSettings._read`` held until released, counting the checks."""

    def __init__(self, live: LiveSettings) -> None:
        self.real, self.reads, self.release = live._read, 0, asyncio.Event()
        live._read = self  # type: ignore[method-assign]

    async def __call__(self, service: object, *, force: bool) -> object:
        self.reads += 1
        await self.release.wait()
        return await self.real(service, force=force)  # type: ignore[arg-type]


async def test_requests_do_not_queue_behind_a_settings_check(env: Env) -> None:
    csrf = await login(env)
    assert (await make_new_users_administrators(env, csrf)).status_code == 303
    other = LiveSettings(base=env.sandbox.settings)  # another process, just started
    other_service = dataclasses.replace(env.service, settings=env.sandbox.settings)
    check = SlowCheck(other)
    # Before the first check has ended, requests wait for it: the stored settings apply from
    # the first request on.
    first = [asyncio.create_task(other.refresh(other_service)) for _ in range(20)]
    await asyncio.sleep(0.05)
    assert check.reads == 1
    assert not any(task.done() for task in first)
    check.release.set()
    await asyncio.wait_for(asyncio.gather(*first), 5)
    assert other_service.settings.default_role == "administrator"
    # Later, one request checks; those that come meanwhile go on at once with the settings
    # in force (queued on the lock, they were let through one per turn of the event loop).
    check.release.clear()
    other.checked_at = float("-inf")  # the interval has passed
    checker = asyncio.create_task(other.refresh(other_service))
    await asyncio.sleep(0.05)
    assert check.reads == 2
    in_force = other_service.settings
    await asyncio.wait_for(asyncio.gather(*(other.refresh(other_service) for _ in range(50))), 1)
    assert not checker.done()
    assert check.reads == 2
    assert other_service.settings is in_force
    # The panel's own save (force) waits for the check under way, then checks again.
    forced = asyncio.create_task(other.refresh(other_service, force=True))
    await asyncio.sleep(0.05)
    assert not forced.done()
    check.release.set()
    await asyncio.wait_for(asyncio.gather(checker, forced), 5)
    assert check.reads == 3


async def test_a_change_reaches_another_process_through_the_version_stamp(
    env: Env, tmp_path: Path
) -> None:
    csrf = await login(env)
    # A second "process": another runtime and service over the same database, from the same
    # start settings.
    other = LiveSettings(base=env.sandbox.settings)
    other.interval = 0.0
    other_service = dataclasses.replace(env.service, settings=env.sandbox.settings)
    await other.refresh(other_service)
    before = other_service.settings
    await make_new_users_administrators(env, csrf)
    assert other_service.settings.default_role == "subscriber"
    await other.refresh(other_service)
    assert other_service.settings.default_role == "administrator"
    assert other_service.settings.welcome_subject == "Hi"
    # Applied by replacing the frozen object, not by editing it.
    assert other_service.settings is not before
    assert before.default_role == "subscriber"


async def test_apple_settings_validate_like_apple_and_keep_the_key_secret(env: Env) -> None:
    csrf = await login(env)
    page = await env.http.get("/admin/apple")
    assert "Sandbox mode: redirect URIs with" in page.text
    assert env.settings.notification_url in page.text
    assert "P-256" in page.text
    team = env.emulator.default_team
    base = {
        "csrf": csrf,
        "redirect_uri": "",
        "client_id": team.services_id,
        "app_ids": team.app_id,
        "team_id": team.team_id,
        "key_id": team.key_id,
        "secret_mode": "auto",
    }
    fragment = await env.http.post(
        "/admin/apple", data={**base, "redirect_uri": "https://a.example/cb#x"}
    )
    assert fragment.status_code == 400
    assert "fragment" in fragment.text
    with_team = await env.http.post(
        "/admin/apple", data={**base, "client_id": f"com.{team.team_id}.web"}
    )
    assert with_team.status_code == 400
    short = await env.http.post("/admin/apple", data={**base, "key_id": "SHORT"})
    assert short.status_code == 400
    local = await env.http.post(
        "/admin/apple", data={**base, "redirect_uri": "http://localhost:8000/auth/apple/callback"}
    )
    assert local.status_code == 200
    assert "accepted because this is sandbox mode" in local.text
    expired = await env.http.post(
        "/admin/apple", data={**base, "secret_mode": "pasted", "client_secret": "a.b.c"}
    )
    assert expired.status_code == 400
    assert "Refused" in expired.text
    pem = team.private_key_pem
    pasted = await env.http.post(
        "/admin/apple", files={"private_key_file": ("AuthKey.p8", pem.encode())}, data=base
    )
    assert pasted.status_code == 200, pasted.text
    assert pem.splitlines()[1] not in pasted.text
    assert "pasted here (stored encrypted)" in pasted.text
    async with env.service.sessions() as db:
        row = await db.get(SettingValue, "private_key")
    assert row is not None
    assert row.encrypted
    assert "PRIVATE KEY" not in row.value
    detail = " ".join(e.detail for e in await events(env, "admin.apple_settings_changed"))
    assert "PRIVATE KEY" not in detail


async def test_verify_settings_passes_then_fails_with_a_wrong_key_id(env: Env) -> None:
    csrf = await login(env)
    ok = await env.http.post("/admin/verify", data={"csrf": csrf})
    assert ok.status_code == 200
    assert "Settings verified" in ok.text
    assert "invalid_grant" in ok.text
    team = env.emulator.default_team
    wrong = await env.http.post(
        "/admin/apple",
        data={
            "csrf": csrf,
            "client_id": team.services_id,
            "app_ids": team.app_id,
            "team_id": team.team_id,
            "key_id": "WRONGKEY12",
            "secret_mode": "auto",
        },
    )
    assert wrong.status_code == 200, wrong.text
    failed = await env.http.post("/admin/verify", data={"csrf": csrf})
    assert "Verification failed" in failed.text
    assert "invalid_client" in failed.text
    # The causes are the library's own list (InvalidClient.likely_causes), all of them, in order.
    shown = [str(escape(cause)) for cause in InvalidClient.likely_causes]
    assert len(shown) == 6
    positions = [failed.text.index(cause) for cause in shown]
    assert positions == sorted(positions)
    results = await events(env, "admin.settings_verified")
    assert [("true" in e.detail) for e in results] == [True, False]


async def test_users_search_role_change_and_delete_with_revoke(env: Env) -> None:
    await env.web_sign_in(account=MARIA, name="Maria Ruiz")
    await env.web_sign_in(account="li.wei@example.com", name="Li Wei")
    csrf = await login(env)
    found = await env.http.get("/admin/users", params={"q": "ruiz"})
    assert MARIA in found.text
    assert "li.wei@example.com" not in found.text
    async with env.service.sessions() as db:
        maria = await db.scalar(select(User).where(User.email == MARIA))
    assert maria is not None
    by_sub = await env.http.get("/admin/users", params={"q": maria.sub})
    assert MARIA in by_sub.text
    role = await env.http.post(
        f"/admin/users/{maria.id}/role", data={"csrf": csrf, "role": "administrator"}
    )
    assert role.status_code == 303
    deleted = await env.http.post(f"/admin/users/{maria.id}/delete", data={"csrf": csrf})
    assert deleted.status_code == 200
    assert f"Revoked at Apple: {env.settings.client_id}" in deleted.text
    names = [e.event for e in await events(env, "")]
    assert "admin.role_changed" in names
    assert "user.deleted" in names


async def test_api_key_is_shown_once_and_can_be_revoked(env: Env) -> None:
    csrf = await login(env)
    created = await env.http.post("/admin/apikeys", data={"csrf": csrf, "name": "ios"})
    key = re.search(r'id="new-key" value="(ack_[^"]+)"', created.text)
    assert key
    listing = await env.http.get("/admin/apikeys")
    assert key.group(1) not in listing.text
    request = await env.http.get("/api/apple_request_auth", params={"key": key.group(1)})
    assert request.status_code == 200
    async with env.service.sessions() as db:
        ids = [k.id for k in await store.list_api_keys(db=db) if k.name == "ios"]
    revoked = await env.http.post(f"/admin/apikeys/{ids[0]}/revoke", data={"csrf": csrf})
    assert revoked.status_code == 303
    refused = await env.http.get("/api/apple_request_auth", params={"key": key.group(1)})
    assert refused.status_code == 401
    assert [e.event for e in await events(env, "admin.apikey")] == [
        "admin.apikey_created",
        "admin.apikey_revoked",
    ]


async def test_test_email_goes_to_the_outbox_without_smtp(env: Env) -> None:
    csrf = await login(env)
    sent = await env.http.post(
        "/admin/new-users/test-email", data={"csrf": csrf, "to": "a@b.example"}
    )
    assert sent.status_code == 200
    assert "put in the outbox" in sent.text
    outbox = await env.http.get("/admin/outbox")
    assert "a@b.example" in outbox.text
    assert "Apple Connect test email" in outbox.text
    for path in ("/admin/audit", "/admin/notifications", "/admin/embed"):
        assert (await env.http.get(path)).status_code == 200, path


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/buttons/apple", "svg"), ("/buttons/apple/left", "svg"), ("/buttons/apple/logo", "svg")],
)
async def test_buttons_are_svg_by_default_png_on_request_and_404_when_invalid(
    tmp_path: Path, path: str, kind: str
) -> None:
    sandbox = build_sandbox_app(tmp_path / "data", public_url=PUBLIC_URL)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(sandbox.app.router.lifespan_context(sandbox.app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=sandbox.transport, base_url=PUBLIC_URL)
        )
        svg = await http.get(path)
        assert svg.status_code == 200
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert "Sign in with Apple" in svg.text
        png = await http.get(path, params={"format": "png"})
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG")
        accept = await http.get(path, headers={"accept": "image/png,*/*"})
        assert accept.headers["content-type"] == "image/png"
        for bad in ("format=gif", "scale=7", "color=Black", "border=true&border=true", "x=1"):
            assert (await http.get(f"{path}?{bad}")).status_code == 404, bad
        js = await http.get("/embed.js")
        assert js.headers["content-type"].startswith("text/javascript")


async def test_embed_popup_posts_only_to_allowed_origins(env: Env) -> None:
    refused = await env.http.get("/embed/popup", params={"origin": "https://site.example"})
    assert refused.status_code == 403
    csrf = await login(env)
    bad = await env.http.post(
        "/admin/embed/origins", data={"csrf": csrf, "origins": "https://site.example/path"}
    )
    assert bad.status_code == 400
    saved = await env.http.post(
        "/admin/embed/origins", data={"csrf": csrf, "origins": "https://site.example"}
    )
    assert saved.status_code == 303
    start = await env.http.get("/embed/popup", params={"origin": "https://site.example"})
    assert start.status_code == 303
    next_path = parse_qs(urlsplit(start.headers["location"]).query)["next"][0]
    assert next_path.startswith("/embed/popup/done?")
    finish = await env.web_sign_in(next_path=next_path)
    done = await env.http.get(finish.headers["location"])
    assert done.status_code == 200
    assert '"status": "ok"' in done.text
    assert '"https://site.example"' in done.text
    forged = await env.http.get(finish.headers["location"])
    assert forged.status_code == 403  # the ticket cookie is single use


async def test_sandbox_registers_a_changed_redirect_uri_and_client_id_with_the_emulator(
    env: Env,
) -> None:
    csrf = await login(env)
    team = env.emulator.default_team
    new_uri = "http://localhost:8000/auth/apple/callback"
    new_client = "com.example.panelweb"
    assert env.emulator.get_client(new_client) is None
    saved = await env.http.post(
        "/admin/apple",
        data={
            "csrf": csrf,
            "redirect_uri": new_uri,
            "client_id": new_client,
            "app_ids": team.app_id,
            "team_id": team.team_id,
            "key_id": team.key_id,
            "secret_mode": "auto",
        },
    )
    assert saved.status_code == 200, saved.text
    client = env.emulator.get_client(new_client)
    assert (client.team_id, client.kind) == (team.team_id, "web")
    assert new_uri in client.redirect_uris
    # The next sign-in goes through the new client id and the new redirect URI.
    start = await env.http.get("/auth/apple/start")
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert (query["client_id"], query["redirect_uri"]) == ([new_client], [new_uri])
    form = await env.consent(start.headers["location"], account=MARIA)
    callback = await env.http.post(new_uri, data=form)
    assert callback.status_code == 303, callback.text
    finish = await env.http.get(callback.headers["location"])
    assert finish.status_code == 303
    info = await env.http.get(
        "/api/get_currentuserinfo",
        params={"cookie": finish.cookies[env.settings.cookie_name]},
    )
    assert info.json()["user"]["email"] == MARIA


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "login.example.com", True),
        ("https://login.example.com", "login.example.com", True),
        ("https://LOGIN.example.com", "proxy.internal", True),
        ("https://login.example.com:8443", "login.example.com:8443", True),
        ("http://login.example.com", "login.example.com", False),
        ("http://login.example.com:8443", "login.example.com:8443", False),
        ("https://evil.example", "login.example.com", False),
        ("null", "login.example.com", False),
    ],
)
def test_same_origin_compares_the_scheme_as_well_as_the_host(
    origin: str | None, host: str, allowed: bool
) -> None:
    settings = Settings(mode="production", public_url="https://login.example.com")
    assert admin_auth.same_origin(settings, origin, host) is allowed
