"""Sign in with Apple JS for the emulator: ``appleid.auth.js`` and its popup (section 10).

Apple serves the script from ``appleid.cdn-apple.com`` at
``/appleauth/static/jsapi/appleid/1/<locale>/appleid.auth.js``; the emulator serves the same path.
The script implements ``AppleID.auth.init`` and ``AppleID.auth.signIn``, renders
``<div id="appleid-signin">`` buttons from their ``data-`` attributes, and dispatches
``AppleIDSignInOnSuccess`` / ``AppleIDSignInOnFailure`` on ``document``.

Without a popup the script sends the browser to ``/auth/authorize`` with
``response_mode=form_post``, exactly as Apple's does. With ``usePopup`` Apple's script uses the
undocumented ``response_mode=web_message``; the emulator's ``/auth/authorize`` accepts only the
documented modes, so the popup opens ``/appleauth/popup/authorize`` instead (an emulator-only
path). It validates the request with Apple's rules (a registered redirect URI included), shows the
same consent page, and delivers the result with ``postMessage`` to the origin of the registered
redirect URI only, so no other page can read the code.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from appleconnect.buttons import LOCALES

from . import protocol
from ._errors import OAuthError
from ._http import (
    MAX_FORM_BYTES,
    MAX_QUERY_BYTES,
    BodyTooLarge,
    parse_authorize_query,
    parse_form,
    read_body,
    root_path,
)
from .consent import answer_consent, consent_page
from .deps import PagesDep, StateDep
from .pages import Pages

__all__ = ["router"]

SCRIPT = Path(__file__).parent / "static" / "appleid.auth.js"
MESSAGE_TYPE = "appleid_signin_response"
POPUP_FORM_ACTION = "'self'"
"""The popup's consent page posts back here only."""
_FRAME_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
# Apple's 37 button locales (docs/apple-rest-api.md, section 9.1).
_LOCALE = re.compile(r"[a-z]{2}_[A-Z]{2}")

router = APIRouter(include_in_schema=False)


@functools.cache
def _script() -> bytes:
    return SCRIPT.read_bytes()


def _origin(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _error_page(pages: Pages, exc: OAuthError) -> HTMLResponse:
    return pages.error(exc, form_action=POPUP_FORM_ACTION)


def _as_form_post(params: dict[str, list[str]]) -> dict[str, list[str]]:
    # The popup stands in for Apple's web_message mode; the rules are those of form_post.
    return {**params, "response_mode": ["form_post"]}


def web_message_data(params: dict[str, str]) -> dict[str, Any]:
    """The ``data`` of the message posted to the opener: the authorization or the error."""
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


@router.get("/appleauth/static/jsapi/appleid/1/{locale}/appleid.auth.js")
async def script(locale: str) -> Response:
    """The emulator's ``appleid.auth.js`` for one of Apple's locales."""
    if not _LOCALE.fullmatch(locale) or locale not in LOCALES:
        return Response(status_code=404)
    return Response(
        _script(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/appleauth/popup/authorize")
async def popup_authorize(request: Request, state: StateDep, pages: PagesDep) -> Response:
    """The popup's consent page, for a request validated with ``form_post``'s rules."""
    query = request.scope.get("query_string", b"")
    frame_id = request.query_params.get("frame_id", "")
    try:
        if len(query) > MAX_QUERY_BYTES or not _FRAME_ID.fullmatch(frame_id):
            raise OAuthError("invalid_request", "The request is malformed.")
        params = parse_authorize_query(query)
        params.pop("frame_id", None)
        validated = protocol.validate_authorize(state, _as_form_post(params))
    except OAuthError as exc:
        return _error_page(pages, exc)
    query_part = urllib.parse.urlencode({"frame_id": frame_id})
    action = f"{root_path(request)}/appleauth/popup/consent?{query_part}"
    context = consent_page(state, validated, action)
    return pages.render("consent.html", form_action=POPUP_FORM_ACTION, **context)


@router.post("/appleauth/popup/consent")
async def popup_consent(request: Request, state: StateDep, pages: PagesDep) -> Response:
    """The popup's answer, posted to the opener at the registered redirect URI's origin."""
    frame_id = request.query_params.get("frame_id", "")
    try:
        if not _FRAME_ID.fullmatch(frame_id):
            raise OAuthError("invalid_request", "The request is malformed.")
        result = answer_consent(state, parse_form(await read_body(request, MAX_FORM_BYTES)))
    except BodyTooLarge:
        too_large = OAuthError("invalid_request", "The request body is too large.")
        return _error_page(pages, too_large)
    except OAuthError as exc:
        return _error_page(pages, exc)
    assert result.redirect_uri is not None
    message = {"type": MESSAGE_TYPE, "frame_id": frame_id, "data": web_message_data(result.params)}
    return pages.render(
        "web_message.html",
        form_action=POPUP_FORM_ACTION,
        message=json.dumps(message),
        target_origin=json.dumps(_origin(result.redirect_uri)),
    )
