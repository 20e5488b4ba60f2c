"""The service's public button and embedding endpoints (docs/buttons.md, docs/embedding.md):

- ``GET /buttons/apple``, ``/buttons/apple/left``, ``/buttons/apple/logo``: the button drawn by
  :mod:`appleconnect.buttons` from Apple's parameters; SVG unless ``format=png`` or the
  ``Accept`` header prefers PNG; 404 on any invalid parameter, as Apple's image endpoints.
- ``GET /embed.js``: a script that renders the button on any page and starts the sign-in, by
  redirect or in a popup that returns the result with ``postMessage`` to allowed origins only.
- ``GET /embed/popup`` and ``/embed/popup/done``: the popup's two ends.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import escape
from starlette.requests import Request

from appleconnect import buttons

from .. import store
from ..container import ServiceContainer
from ..deps import ContainerDep, CurrentSettings, LiveSettingsDep
from ..embedding import BUTTON_PATHS
from ..models import User
from ..security import constant_time_equal
from ..users import EMBED_FIELDS, user_json

__all__ = ["router"]

STATIC = Path(__file__).parent.parent / "static"
EMBED_COOKIE = "appleconnect_embed"
EMBED_TICKET_TTL = 600
MESSAGE_TYPE = "appleconnect:signin"


def _wants_png(request: Request) -> bool | None:
    """``True`` for PNG, ``False`` for SVG, ``None`` for an invalid ``format``."""
    fmt = request.query_params.getlist("format")
    if fmt:
        if len(fmt) > 1 or fmt[0] not in ("png", "svg"):
            return None
        return fmt[0] == "png"
    accept = request.headers.get("accept", "")
    return "image/png" in accept and "image/svg+xml" not in accept


def _button_route(kind: buttons.Kind) -> Any:
    async def route(request: Request) -> Response:
        png = _wants_png(request)
        if png is None:
            return Response(status_code=404)
        params = request.query_params
        # A dict of lists (as parse_qs gives) lets the parser see repeated parameters.
        query = {k: params.getlist(k) for k in params.keys() if k != "format"}  # noqa: SIM118
        try:
            spec = buttons.parse_button_query(kind, query)  # type: ignore[arg-type]
        except buttons.ButtonParamsError:
            return Response(status_code=404)
        headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept"}
        if png:
            return Response(buttons.render_png(spec), media_type="image/png", headers=headers)
        return Response(buttons.render_svg(spec), media_type="image/svg+xml", headers=headers)

    route.__doc__ = f"The {kind} Sign in with Apple button (SVG, or PNG); 404 when invalid."
    return route


def _message_page(nonce: str, origin: str, data: Mapping[str, Any]) -> HTMLResponse:
    payload = json.dumps(data).replace("<", "\\u003c")
    target = json.dumps(origin).replace("<", "\\u003c")
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in with Apple</title></head>
<body style="font:16px/1.5 system-ui,sans-serif;margin:2rem">
<p id="status">Returning to the page you came from… You can close this window.</p>
<script nonce="{nonce}">
(function () {{
  var data = {payload};
  if (window.opener) {{ window.opener.postMessage(data, {target}); }}
  window.close();
}})();
</script>
</body></html>"""
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}'; "
            "style-src 'unsafe-inline'; base-uri 'none'",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


def _refusal(text: str, status: int) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Sign in with Apple"
        f"</title></head><body><p>{escape(text)}</p></body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


router = APIRouter(include_in_schema=False)
for _kind, _path in BUTTON_PATHS.items():
    router.add_api_route(_path, _button_route(_kind), methods=["GET"])


@router.get("/embed.js")
async def embed_js() -> Response:
    return Response(
        (STATIC / "embed.js").read_bytes(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


@router.get("/embed/popup")
async def popup_start(
    request: Request, live: LiveSettingsDep, settings: CurrentSettings, origin: str = ""
) -> Response:
    if origin not in live.allowed_origins:
        return _refusal(
            "This site is not allowed to open Sign in with Apple here. The administrator "
            "adds its origin under Embedding in the admin panel.",
            403,
        )
    ticket = secrets.token_urlsafe(24)
    next_path = "/embed/popup/done?" + urlencode({"origin": origin, "ticket": ticket})
    response = RedirectResponse(
        "/auth/apple/start?" + urlencode({"next": next_path}), status_code=303
    )
    response.set_cookie(
        EMBED_COOKIE,
        ticket,
        max_age=EMBED_TICKET_TTL,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="lax",
        path="/embed",
    )
    return response


@router.get("/embed/popup/done")
async def popup_done(
    request: Request,
    live: LiveSettingsDep,
    service: ContainerDep,
    origin: str = "",
    ticket: str = "",
    signin: str = "",
) -> Response:
    expected = request.cookies.get(EMBED_COOKIE, "")
    if origin not in live.allowed_origins or not (
        expected and constant_time_equal(expected, ticket)
    ):
        return _refusal("This sign-in window has expired; start again from the page.", 403)
    if signin == "cancelled":
        data = {"type": MESSAGE_TYPE, "status": "error", "error": "user_cancelled_authorize"}
    else:
        data = await _popup_result(request, service, origin)
    response = _message_page(secrets.token_urlsafe(12), origin, data)
    response.delete_cookie(EMBED_COOKIE, path="/embed")
    return response


async def _popup_result(request: Request, service: ServiceContainer, origin: str) -> dict[str, Any]:
    """What the popup posts to the page that opened it: a session of its own for the
    embedding site (like ``apple_connect``'s cookie) and the user, or an error."""
    settings = service.settings
    token = request.cookies.get(settings.session_cookie, "")
    user: User | None = await store.session_user(reads=service.reads, raw=token)
    if user is None:
        return {"type": MESSAGE_TYPE, "status": "error", "error": "not_signed_in"}
    async with service.sessions() as db:
        cookie = await store.create_session(db=db, user_id=user.id, ttl=settings.session_ttl)
        await store.audit(
            db=db,
            event="embed.signed_in",
            actor="user",
            sub=user.sub,
            detail={"origin": origin},
        )
        await db.commit()
    shown = user_json(user)
    return {
        "type": MESSAGE_TYPE,
        "status": "ok",
        "cookie": cookie,
        "user": {k: shown[k] for k in EMBED_FIELDS},
    }
