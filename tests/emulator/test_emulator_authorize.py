"""``GET /auth/authorize``: Apple's parameter checks, the consent page, and the browser-free
end-to-end web flow (parse the HTML form, submit it, follow what Apple would deliver)."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from emulator_helpers import WEB_REDIRECT, parse_forms, verify_apple_jwt
from markupsafe import escape
from starlette.applications import Starlette
from starlette.routing import Mount

from appleconnect.emulator import EmulatorState, create_emulator_app

Exchange = Callable[..., Any]

GOOD = {
    "client_id": "com.example.web",
    "redirect_uri": WEB_REDIRECT,
    "response_type": "code id_token",
    "response_mode": "form_post",
    "scope": "name email",
    "state": "xyz",
    "nonce": "abc",
}


def with_(**changes: str | None) -> dict[str, str]:
    params = {**GOOD, **changes}
    return {k: v for k, v in params.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "error", "description"),
    [
        ({"client_id": None}, "invalid_request", "The parameter client_id is missing."),
        (
            {"client_id": "com.example.WEB"},
            "invalid_client",
            "No primary app or web service was found for client_id.",
        ),
        ({"redirect_uri": None}, "unauthorized_client", "The parameter redirect_uri is missing."),
        (
            {"redirect_uri": "https://evil.example/cb"},
            "unauthorized_client",
            "Invalid web redirect url.",
        ),
        (
            {"redirect_uri": "http://localhost:9999/cb"},
            "unauthorized_client",
            "Invalid web redirect url.",
        ),
        ({"scope": "name phone"}, "invalid_scope", "The requested scope is invalid."),
        ({"scope": "names"}, "invalid_scope", "The requested scope is invalid."),
        (
            {"response_mode": "query", "response_type": "code"},
            "invalid_request",
            "response_mode must be form_post when name or email scope is requested.",
        ),
        (
            {"response_type": "id_token"},
            "unsupported_response_type",
            "response_type id_token alone is not supported.",
        ),
        (
            {"response_type": "code id_token", "response_mode": "query", "scope": None},
            "invalid_request",
            "response_mode must be fragment or form_post for id_token.",
        ),
        ({"response_type": "token"}, "invalid_request", "Invalid response_type."),
        ({"response_type": None}, "invalid_request", "The parameter response_type is missing."),
        ({"response_mode": "web-message"}, "invalid_request", "Invalid response_mode."),
    ],
)
async def test_authorize_rejects_like_apple(
    client: httpx.AsyncClient, changes: dict[str, str | None], error: str, description: str
) -> None:
    response = await client.get("/auth/authorize", params=with_(**changes))
    assert response.status_code == 400
    assert response.json() == {"error": error, "error_description": description}


async def test_native_app_id_cannot_use_the_web_flow(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/authorize", params=with_(client_id="com.example.app"))
    assert response.json()["error"] == "invalid_client"


async def test_repeated_parameter_is_invalid_request(client: httpx.AsyncClient) -> None:
    query = urllib.parse.urlencode(GOOD) + "&state=again"
    response = await client.get(f"/auth/authorize?{query}")
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "The parameter state is repeated.",
    }


async def test_browser_sees_an_error_page(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/auth/authorize",
        params=with_(client_id="nope"),
        headers={"accept": "text/html,application/xhtml+xml"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert '<code id="error">invalid_client</code>' in response.text


async def test_localhost_redirect_uri_works_once_registered(
    client: httpx.AsyncClient, state: EmulatorState
) -> None:
    uri = "http://localhost:9999/cb"
    state.register_redirect_uri("com.example.web", uri)
    response = await client.get("/auth/authorize", params=with_(redirect_uri=uri))
    assert response.status_code == 200


async def test_consent_page_is_accessible_plain_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/authorize", params=GOOD)
    assert response.status_code == 200
    page = response.text
    assert "Emulator" in page
    assert "<script" not in page  # works without JavaScript
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing external
    [form] = parse_forms(page)
    assert form["method"] == "post"
    assert form["action"] == "/auth/authorize/consent"
    # Every visible input has a label.
    labelled = set(form["labels"])
    for input_id, attrs in form["ids"].items():
        if attrs.get("type") != "hidden":
            assert input_id in labelled, input_id
    assert [b["text"] for b in form["buttons"]] == ["Continue", "Cancel"]
    assert "maria.ruiz@example.com" in page
    assert "Hide My Email" in page


async def submit(
    client: httpx.AsyncClient, params: dict[str, str], **choices: str
) -> httpx.Response:
    """Load the consent page, fill the form like a user, press a button."""
    page = await client.get("/auth/authorize", params=params)
    assert page.status_code == 200, page.text
    [form] = parse_forms(page.text)
    fields = dict(form["fields"])
    fields.update(choices)
    fields.setdefault("action", "continue")
    return await client.post(form["action"], data=fields)


async def test_web_flow_form_post_end_to_end(
    client: httpx.AsyncClient, exchange: Exchange, state: EmulatorState
) -> None:
    answer = await submit(client, GOOD, first_name="Mariá", last_name="Ruiz-López")
    assert answer.status_code == 200
    # Apple's form_post: an auto-submitting form that POSTs to the redirect URI.
    [form] = parse_forms(answer.text)
    assert form["action"] == WEB_REDIRECT
    assert form["method"] == "post"
    assert [b["text"] for b in form["buttons"]] == ["Continue"]  # works without JavaScript
    posted = form["fields"]
    assert set(posted) == {"code", "id_token", "state", "user"}
    assert posted["state"] == "xyz"
    assert json.loads(posted["user"]) == {
        "name": {"firstName": "Mariá", "lastName": "Ruiz-López"},
        "email": "maria.ruiz@example.com",
    }
    claims = await verify_apple_jwt(client, posted["id_token"], "com.example.web")
    assert claims["nonce"] == "abc"
    assert "c_hash" in claims
    tokens = await exchange(code=posted["code"])
    assert tokens.status_code == 200
    token_claims = await verify_apple_jwt(client, tokens.json()["id_token"], "com.example.web")
    assert token_claims["sub"] == claims["sub"]
    # The consent form answers once.
    replay = await client.post(
        "/auth/authorize/consent", data={"request_id": "nope", "action": "continue"}
    )
    assert replay.json()["error"] == "invalid_request"


async def test_web_flow_query_mode(client: httpx.AsyncClient, exchange: Exchange) -> None:
    params = with_(response_type="code", response_mode="query", scope=None)
    answer = await submit(client, params)
    assert answer.status_code == 302
    location = urllib.parse.urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == WEB_REDIRECT
    delivered = dict(urllib.parse.parse_qsl(location.query))
    assert set(delivered) == {"code", "state"}
    assert (await exchange(code=delivered["code"])).status_code == 200


async def test_web_flow_fragment_mode(client: httpx.AsyncClient) -> None:
    params = with_(response_mode="fragment", scope=None)
    answer = await submit(client, params)
    assert answer.status_code == 302
    fragment = urllib.parse.urlsplit(answer.headers["location"]).fragment
    assert set(dict(urllib.parse.parse_qsl(fragment))) == {"code", "id_token", "state"}


async def test_cancel_sends_user_cancelled_authorize(client: httpx.AsyncClient) -> None:
    answer = await submit(client, GOOD, action="cancel")
    [form] = parse_forms(answer.text)
    assert form["fields"] == {"error": "user_cancelled_authorize", "state": "xyz"}


async def test_hide_my_email_gives_a_stable_relay_address(
    client: httpx.AsyncClient, state: EmulatorState
) -> None:
    answer = await submit(client, GOOD, share_email="hide")
    [form] = parse_forms(answer.text)
    user = json.loads(form["fields"]["user"])
    assert user["email"].endswith("@privaterelay.appleid.com")
    claims = await verify_apple_jwt(client, form["fields"]["id_token"], "com.example.web")
    assert claims["email"] == user["email"]
    assert claims["is_private_email"] == "true"
    account = state.find_account("maria.ruiz@example.com")
    assert account is not None
    assert user["email"] == state.relay_email_for(account.id, state.default_team.team_id)
    other_team = state.create_team()
    assert state.relay_email_for(account.id, other_team["team_id"]) != user["email"]


async def test_new_apple_id_from_the_consent_page(
    client: httpx.AsyncClient, state: EmulatorState
) -> None:
    answer = await submit(
        client, GOOD, account="new", new_email="Zoe@Example.org", first_name="Zoe", last_name="Q"
    )
    [form] = parse_forms(answer.text)
    assert json.loads(form["fields"]["user"]) == {
        "name": {"firstName": "Zoe", "lastName": "Q"},
        "email": "zoe@example.org",
    }
    assert state.find_account("zoe@example.org") is not None
    bad = await submit(client, GOOD, account="new", new_email="not-an-email")
    assert bad.json() == {
        "error": "invalid_request",
        "error_description": "'not-an-email' is not an email address.",
    }


async def test_mounted_under_a_prefix() -> None:
    app = create_emulator_app(base_url="http://svc.test/apple/")
    parent = Starlette(routes=[Mount("/apple", app=app)])
    transport = httpx.ASGITransport(app=parent)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as c:
        page = await c.get("/apple/auth/authorize", params=GOOD)
        assert page.status_code == 200
        [form] = parse_forms(page.text)
        assert form["action"] == "/apple/auth/authorize/consent"
        answer = await c.post(form["action"], data={**form["fields"], "action": "continue"})
        assert answer.status_code == 200
        assert parse_forms(answer.text)[0]["action"] == WEB_REDIRECT
        discovery = (await c.get("/apple/.well-known/openid-configuration")).json()
        assert discovery["token_endpoint"] == "http://svc.test/apple/auth/token"
        assert discovery["jwks_uri"] == "http://svc.test/apple/auth/keys"
        assert discovery["issuer"] == "https://appleid.apple.com"
        keys = await c.get(discovery["jwks_uri"])
        assert keys.json()["keys"][0]["alg"] == "RS256"
        listed = await c.get("/apple/emulator/accounts")
        assert listed.json()[0]["email"] == "maria.ruiz@example.com"


async def test_form_mistake_keeps_the_page_usable(client: httpx.AsyncClient) -> None:
    page = await client.get("/auth/authorize", params=GOOD)
    [form] = parse_forms(page.text)
    fields = {**form["fields"], "account": "new", "new_email": "nope", "action": "continue"}
    mistake = await client.post(form["action"], data=fields)
    assert mistake.json()["error_description"] == "'nope' is not an email address."
    fixed = await client.post(form["action"], data={**fields, "new_email": "ok@example.com"})
    assert parse_forms(fixed.text)[0]["action"] == WEB_REDIRECT
    again = await client.post(form["action"], data={**fields, "new_email": "x@example.com"})
    assert again.json() == {
        "error": "invalid_request",
        "error_description": "This sign-in request has expired or was already answered.",
    }


HTML = {"accept": "text/html,application/xhtml+xml"}


async def test_a_browser_gets_the_form_again_with_the_error_beside_the_field(
    client: httpx.AsyncClient, state: EmulatorState
) -> None:
    page = await client.get("/auth/authorize", params=GOOD, headers=HTML)
    [form] = parse_forms(page.text)
    typed = {
        "account": "new",
        "new_email": "a@b",  # what <input type=email> lets through
        "first_name": "Ana",
        "last_name": "Bell",
        "share_email": "hide",
    }
    fields = {**form["fields"], **typed, "action": "continue"}
    mistake = await client.post(form["action"], data=fields, headers=HTML)
    assert mistake.status_code == 400
    assert mistake.headers["content-type"].startswith("text/html")
    assert 'id="new_email-error">&#39;a@b&#39; is not an email address.</span>' in mistake.text
    [again] = parse_forms(mistake.text)
    assert again["action"] == form["action"]
    assert again["fields"] == {**form["fields"], **typed}  # same request_id, all kept
    email_input = again["ids"]["new_email"]
    assert email_input["aria-invalid"] == "true"
    assert email_input["aria-describedby"] == "new_email-error"
    assert state.find_account("a@b") is None  # nothing was created
    fixed = await client.post(
        again["action"],
        data={**again["fields"], "new_email": "ana@b.example", "action": "continue"},
    )
    [delivered] = parse_forms(fixed.text)
    assert delivered["action"] == WEB_REDIRECT
    assert delivered["fields"]["state"] == "xyz"
    assert json.loads(delivered["fields"]["user"])["name"] == {
        "firstName": "Ana",
        "lastName": "Bell",
    }
    claims = await verify_apple_jwt(client, delivered["fields"]["id_token"], "com.example.web")
    assert claims["nonce"] == "abc"
    assert claims["is_private_email"] == "true"


@pytest.mark.parametrize(
    ("typed", "field", "message"),
    [
        ({"account": "new", "new_email": " "}, "new_email", "Enter the email of the new Apple ID."),
        (
            {"account": "new", "new_email": "maria.ruiz@example.com"},
            "new_email",
            "An Apple ID with email maria.ruiz@example.com already exists.",
        ),
        (
            {"account": "new", "new_email": "ok@example.com", "last_name": "x" * 65},
            "last_name",
            "A name may be at most 64 characters.",
        ),
        ({"account": "nobody"}, "account", "Choose an Apple ID."),
    ],
)
async def test_each_form_mistake_is_marked_on_its_field(
    client: httpx.AsyncClient, typed: dict[str, str], field: str, message: str
) -> None:
    page = await client.get("/auth/authorize", params=GOOD, headers=HTML)
    [form] = parse_forms(page.text)
    data = {**form["fields"], **typed, "action": "continue"}
    shown = await client.post(form["action"], data=data, headers=HTML)
    assert shown.status_code == 400
    assert f'id="{field}-error">{escape(message)}</span>' in shown.text
    assert shown.text.count('class="field-error"') == 1
    as_json = await client.post(form["action"], data=data)  # not a browser: Apple's JSON
    assert as_json.json() == {"error": "invalid_request", "error_description": message}


async def test_pages_are_not_sniffed_nor_cached(client: httpx.AsyncClient) -> None:
    consent = await client.get("/auth/authorize", params=GOOD)
    error = await client.get(
        "/auth/authorize", params=with_(client_id="nope"), headers={"accept": "text/html"}
    )
    for page in (consent, error):
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "no-store" in page.headers["cache-control"]
