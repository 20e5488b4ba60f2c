"""``response_mode=web_message`` at ``/auth/authorize`` (Apple's JS popup): accepted for pages on
the origins of the client's registered redirect URIs, refused for others, and the result posted
to the opener with exactly the redirect URI's origin as the target."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from emulator_helpers import WEB_REDIRECT, parse_forms

Exchange = Callable[..., Any]
FRAME = "0d9c2a4e-7b1f-4a53-9a51-3f0a6c1e2b77"
PARAMS = {
    "client_id": "com.example.web",
    "redirect_uri": WEB_REDIRECT,
    "response_type": "code id_token",
    "response_mode": "web_message",
    "scope": "name email",
    "state": "st-wm",
    "nonce": "n-wm",
    "frame_id": FRAME,
}
MESSAGE = re.compile(r"var message = (\{.*?\});\n")
TARGET = re.compile(r"window\.opener\.postMessage\(message, (\"[^\"]*\")\)")


def posted(page: str) -> tuple[dict[str, Any], str]:
    """The message and the target origin the page posts to its opener."""
    message, target = MESSAGE.search(page), TARGET.search(page)
    assert message is not None
    assert target is not None
    return json.loads(message.group(1)), json.loads(target.group(1))


async def consent(client: httpx.AsyncClient, action: str, **headers: str) -> httpx.Response:
    page = await client.get("/auth/authorize", params=PARAMS, headers=headers)
    assert page.status_code == 200, page.text
    [form] = parse_forms(page.text)
    return await client.post(form["action"], data={**form["fields"], "action": action})


@pytest.mark.parametrize(
    "opener", [{}, {"referer": "https://example.com/shop/login"}, {"origin": "https://example.com"}]
)
async def test_the_result_is_posted_to_the_redirect_uris_origin_only(
    client: httpx.AsyncClient, exchange: Exchange, opener: dict[str, str]
) -> None:
    answer = await consent(client, "continue", **opener)
    assert answer.status_code == 200
    message, target = posted(answer.text)
    assert target == "https://example.com"
    assert message["type"] == "appleid_signin_response"
    assert message["frame_id"] == FRAME
    data = message["data"]
    assert set(data) == {"authorization", "user"}
    assert set(data["authorization"]) == {"code", "id_token", "state"}
    assert data["authorization"]["state"] == "st-wm"
    assert data["user"] == {
        "name": {"firstName": "Maria", "lastName": "Ruiz"},
        "email": "maria.ruiz@example.com",
    }
    csp = answer.headers["content-security-policy"]
    assert "script-src 'nonce-" in csp
    tokens = await exchange(code=data["authorization"]["code"])
    assert tokens.status_code == 200, tokens.text


async def test_cancel_is_posted_as_apples_error(client: httpx.AsyncClient) -> None:
    message, target = posted((await consent(client, "cancel")).text)
    assert target == "https://example.com"
    assert message["data"] == {"error": "user_cancelled_authorize", "state": "st-wm"}


@pytest.mark.parametrize(
    "opener",
    [
        {"referer": "https://evil.example/page"},
        {"origin": "https://example.com.evil.example"},
        {"referer": "http://example.com/"},  # another scheme is another origin
    ],
)
async def test_a_page_of_another_origin_is_refused(
    client: httpx.AsyncClient, opener: dict[str, str]
) -> None:
    refused = await client.get("/auth/authorize", params=PARAMS, headers=opener)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_request",
        "error_description": "response_mode=web_message is only for pages on the origins of "
        "the client's registered redirect URIs.",
    }


async def test_the_redirect_uri_must_still_be_registered(client: httpx.AsyncClient) -> None:
    params = {**PARAMS, "redirect_uri": "https://evil.example/cb"}
    refused = await client.get(
        "/auth/authorize", params=params, headers={"referer": "https://evil.example/"}
    )
    assert refused.json() == {
        "error": "unauthorized_client",
        "error_description": "Invalid web redirect url.",
    }


async def test_a_malformed_frame_id_is_refused(client: httpx.AsyncClient) -> None:
    refused = await client.get("/auth/authorize", params={**PARAMS, "frame_id": "<script>"})
    assert refused.json() == {
        "error": "invalid_request",
        "error_description": "The parameter frame_id is malformed.",
    }


async def test_the_emulator_only_popup_path_is_gone(client: httpx.AsyncClient) -> None:
    assert (await client.get("/appleauth/popup/authorize", params=PARAMS)).status_code == 404
