"""``response_mode=web_message``: the authorization posted to the page that opened the popup.

Apple's JS (``AppleID.auth.signIn`` with ``usePopup``) opens ``/auth/authorize`` in a popup with
``response_mode=web_message`` and a ``frame_id``. The emulator accepts it only from pages on the
origins of the client's registered redirect URIs: when the browser names the opener (``Origin``
or ``Referer``) and that origin is not one of them, the request is refused; and the result is
posted with ``postMessage`` to exactly the origin of the request's (registered) redirect URI, so
that a page of any other origin never receives it.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from fastapi import Request

from ._errors import OAuthError
from .protocol import AuthorizationResult, AuthorizeRequest

MESSAGE_TYPE = "appleid_signin_response"
FOREIGN_ORIGIN = (
    "response_mode=web_message is only for pages on the origins of the client's registered "
    "redirect URIs."
)


def origin_of(uri: str) -> str:
    """``scheme://host[:port]`` of a URL."""
    parts = urllib.parse.urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def check_opener(request: Request, validated: AuthorizeRequest) -> None:
    """Refuse a web_message request that the browser says comes from a foreign page."""
    named = request.headers.get("origin") or request.headers.get("referer")
    if not named or named == "null":
        return
    allowed = {origin_of(uri) for uri in validated.client.redirect_uris}
    if origin_of(named) not in allowed:
        raise OAuthError("invalid_request", FOREIGN_ORIGIN)


def message_data(params: dict[str, str]) -> dict[str, Any]:
    """What the opener receives: ``{"authorization": {code, id_token, state}, "user"?}`` or
    ``{"error", "state"?}``, the shapes Apple's JS resolves and rejects with."""
    data: dict[str, Any]
    if "error" in params:
        data = {"error": params["error"]}
        if "state" in params:
            data["state"] = params["state"]
        return data
    data = {"authorization": {k: params[k] for k in ("code", "id_token", "state") if k in params}}
    if "user" in params:
        data["user"] = json.loads(params["user"])
    return data


def page_context(result: AuthorizationResult) -> dict[str, Any]:
    """The ``web_message.html`` template's context: the message and its exact target origin."""
    assert result.redirect_uri is not None
    message = {
        "type": MESSAGE_TYPE,
        "frame_id": result.frame_id,
        "data": message_data(result.params),
    }
    return {
        "message": json.dumps(message),
        "target_origin": json.dumps(origin_of(result.redirect_uri)),
    }
