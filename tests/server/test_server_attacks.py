"""Attacks the service already resists, each pinned by a test (docs/security.md): forged Host
and X-Forwarded-* headers, cross-origin reads (CORS), look-alike forward_uris, markup in names,
and one code used twice at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from server_helpers import Env, open_env

EVIL = "evil.example"
FORGED = {
    "host": EVIL,
    "x-forwarded-host": EVIL,
    "x-forwarded-proto": "https",
    "x-forwarded-for": "203.0.113.66",
    "forwarded": f"host={EVIL};proto=https",
}


def _redirect_uri(location: str) -> str:
    return parse_qs(urlsplit(location).query)["redirect_uri"][0]


async def test_forged_host_and_forwarded_headers_change_no_url(env: Env) -> None:
    start = await env.http.get("/auth/apple/start", headers=FORGED)
    assert start.status_code == 303
    assert _redirect_uri(start.headers["location"]) == env.settings.effective_redirect_uri
    made = await env.http.get(
        "/api/apple_request_auth", headers={**FORGED, "x-api-key": env.api_key}
    )
    assert made.status_code == 200, made.text
    assert _redirect_uri(made.json()["url"]) == env.settings.effective_redirect_uri
    assert EVIL not in start.headers["location"] + made.json()["url"]


async def test_no_cross_origin_reads_are_allowed(env: Env) -> None:
    """No CORS headers: a page of another origin cannot read an answer, even with the session."""
    token = (await env.web_sign_in()).cookies[env.settings.cookie_name]
    origin = {"origin": f"https://{EVIL}"}
    preflight = await env.http.options(
        "/api/get_currentuserinfo",
        headers={**origin, "access-control-request-method": "GET"},
    )
    read = await env.http.get(
        "/api/get_currentuserinfo", headers={**origin, "authorization": f"Bearer {token}"}
    )
    assert preflight.status_code == 405
    assert read.status_code == 200
    for response in (preflight, read):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


LOOK_ALIKES = (
    "https://app.example.com/hook/",
    "https://app.example.com/hook?x=1",
    "https://app.example.com/hook#x",
    "https://app.example.com/hook/../hook",
    "https://app.example.com@evil.example/hook",
    "https://app.example.com.evil.example/hook",
    "HTTPS://APP.EXAMPLE.COM/hook",
    "http://app.example.com/hook",
    "https://app.example.com/hook%2f",
)


async def test_forward_uris_match_exactly_and_a_refused_one_spends_no_code(
    tmp_path: Path,
) -> None:
    overrides = {"forward_uris": ("https://app.example.com/hook",)}
    async with open_env(tmp_path / "data", overrides) as env:
        native = await env.native_code()
        for uri in LOOK_ALIKES:
            refused = await env.http.post(
                "/api/apple_connect",
                data={"key": env.api_key, "code": native["code"], "redirect_uri": uri},
            )
            assert refused.status_code == 400, uri
            assert refused.json()["field"] == "redirect_uri"
        # The code was not spent by the refusals.
        ok = await env.http.post(
            "/api/apple_connect", data={"key": env.api_key, "code": native["code"]}
        )
        assert ok.status_code == 200, ok.text


async def test_markup_in_a_name_is_shown_as_text(env: Env) -> None:
    await env.web_sign_in(name="<script>alert(1)</script> Ruiz")
    page = await env.http.get("/")  # the client keeps the session cookie
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_one_code_used_twice_at_once_signs_in_once(env: Env) -> None:
    native = await env.native_code()
    answers = await asyncio.gather(
        *(
            env.http.post("/api/apple_connect", data={"key": env.api_key, "code": native["code"]})
            for _ in range(2)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 400], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 400)
    assert refused.json()["error"] == "invalid_grant"
