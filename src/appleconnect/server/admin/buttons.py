"""The service's Sign in with Apple buttons and the ways to put them on other pages.

- ``GET /buttons/apple``, ``/buttons/apple/left``, ``/buttons/apple/logo``: the button drawn by
  :mod:`appleconnect.buttons` from Apple's parameters; SVG unless ``format=png`` or the
  ``Accept`` header prefers PNG; 404 on any invalid parameter, as Apple's image endpoints.
- ``GET /embed.js``: a script that renders the button on any page and starts the sign-in, by
  redirect or in a popup that returns the result with ``postMessage`` to allowed origins only.
- ``GET /embed/popup`` and ``/embed/popup/done``: the popup's two ends.
- :class:`SnippetOptions` and :func:`snippets`: the admin panel's copy-paste generator.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape
from starlette.requests import Request

from appleconnect import buttons

from .. import store
from ..deps import CurrentSettings, RuntimeDep, ServiceDep
from ..models import User
from ..security import constant_time_equal
from ..signin import Service
from ..users import EMBED_FIELDS, user_json

__all__ = [
    "BUTTON_FIELDS",
    "SnippetOptions",
    "button_markup",
    "router",
    "snippets",
]

STATIC = Path(__file__).parent / "static"
EMBED_COOKIE = "appleconnect_embed"
EMBED_TICKET_TTL = 600
MESSAGE_TYPE = "appleconnect:signin"

_PATHS: dict[buttons.Kind, str] = {
    "center": "/buttons/apple",
    "left": "/buttons/apple/left",
    "logo": "/buttons/apple/logo",
}
_MODES: dict[str, buttons.Kind] = {
    "center-align": "center",
    "left-align": "left",
    "logo-only": "logo",
}
BUTTON_FIELDS = ("mode", "color", "type", "width", "height", "border", "border_radius", "locale")

Flow = Literal["popup", "redirect"]


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


@dataclass(frozen=True)
class SnippetOptions:
    """What the admin panel's snippet generator asks; each field maps to a ``data-`` attribute."""

    mode: str = "center-align"
    color: str = "black"
    type: str = "sign-in"
    width: int = 240
    height: int = 44
    border: bool = False
    border_radius: int = 8
    locale: str = "en_US"
    flow: Flow = "popup"
    next: str = "/"
    error: str = ""

    @property
    def kind(self) -> buttons.Kind:
        return _MODES[self.mode]

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> SnippetOptions:
        """Options from the generator's form; invalid values fall back to the defaults."""
        default = cls()
        values: dict[str, Any] = {}
        try:
            mode = query.get("mode", default.mode)
            if mode not in _MODES:
                raise ValueError("mode")
            values["mode"] = mode
            for name in ("color", "type", "locale"):
                values[name] = query.get(name, getattr(default, name))
            for name in ("width", "height", "border_radius"):
                raw = query.get(name, str(getattr(default, name)))
                if not raw.isdigit() or len(raw) > 4:
                    raise ValueError(name)
                values[name] = int(raw)
            values["border"] = query.get("border") in ("true", "on")
            flow = query.get("flow", default.flow)
            if flow not in ("popup", "redirect"):
                raise ValueError("flow")
            values["flow"] = flow
            next_path = query.get("next", "/")[:200] or "/"
            if not next_path.startswith("/") or next_path.startswith("//"):
                raise ValueError("next")
            values["next"] = next_path
            options = replace(default, **values)
            options.spec()
        except (ValueError, buttons.ButtonParamsError) as exc:
            return replace(default, error=f"Invalid value ({exc}); showing the defaults.")
        return options

    def spec(self) -> buttons.ButtonSpec:
        if self.kind == "logo":
            return buttons.ButtonSpec(
                kind="logo",
                width=self.height,
                height=self.height,
                color=self.color,  # type: ignore[arg-type]
                border=self.border,
                border_radius=self.border_radius,
                type=self.type,  # type: ignore[arg-type]
                locale=self.locale,
            )
        return buttons.ButtonSpec(
            kind=self.kind,
            width=self.width,
            height=self.height,
            color=self.color,  # type: ignore[arg-type]
            border=self.border,
            border_radius=self.border_radius,
            type=self.type,  # type: ignore[arg-type]
            locale=self.locale,
        )

    def image_url(self, service_url: str) -> str:
        query = self.spec().to_query()
        return (
            service_url.rstrip("/") + _PATHS[self.kind] + ("?" + urlencode(query) if query else "")
        )

    def query(self) -> dict[str, str]:
        return {
            "mode": self.mode,
            "color": self.color,
            "type": self.type,
            "width": str(self.width),
            "height": str(self.height),
            "border": "true" if self.border else "false",
            "border_radius": str(self.border_radius),
            "locale": self.locale,
            "flow": self.flow,
            "next": self.next,
        }


def button_markup(
    service_url: str, spec: buttons.ButtonSpec, *, next_path: str = "/", element_id: str = ""
) -> Markup:
    """A link to the service's sign-in with the button image; its accessible name is the label.

    Works without JavaScript. Used by the Jinja2 helper and the snippet generator.
    """
    base = service_url.rstrip("/")
    query = spec.to_query()
    src = base + _PATHS[spec.kind] + ("?" + urlencode(query) if query else "")
    href = f"{base}/auth/apple/start?" + urlencode({"next": next_path})
    name = buttons.label(spec.type, spec.locale)
    ident = f' id="{escape(element_id)}"' if element_id else ""
    # Every interpolated value is escaped above or is an integer.
    return Markup(  # noqa: S704
        f'<a class="appleconnect-button"{ident} href="{escape(href)}" '
        f'style="display:inline-block;line-height:0;border-radius:{spec.border_radius}px">'
        f'<img src="{escape(src)}" width="{spec.width}" height="{spec.height}" '
        f'alt="{escape(name)}"></a>'
    )


def snippets(service_url: str, options: SnippetOptions) -> dict[str, str]:
    """The three ways to place the button, as text to copy."""
    base = service_url.rstrip("/")
    attrs = {
        "data-mode": options.mode,
        "data-color": options.color,
        "data-type": options.type,
        "data-border": "true" if options.border else "false",
        "data-border-radius": str(options.border_radius),
        "data-locale": options.locale,
        "data-flow": options.flow,
    }
    if options.kind == "logo":
        attrs["data-size"] = str(options.height)
    else:
        attrs["data-width"] = str(options.width)
        attrs["data-height"] = str(options.height)
    if options.flow == "redirect":
        attrs["data-next"] = options.next
    script = (
        f'<script src="{escape(base)}/embed.js" async\n'
        + "".join(f'        {k}="{escape(v)}"\n' for k, v in attrs.items())
        + "></script>"
    )
    link = str(button_markup(base, options.spec(), next_path=options.next))
    jinja_args = ", ".join(
        f"{k}={v!r}"
        for k, v in (
            ("kind", options.kind),
            ("color", options.color),
            ("type", options.type),
            ("width", options.width if options.kind != "logo" else options.height),
            ("height", options.height),
            ("border", options.border),
            ("border_radius", options.border_radius),
            ("locale", options.locale),
            ("next", options.next),
        )
    )
    jinja = "{{ sign_in_with_apple(" + jinja_args + ") }}"
    return {"script": script, "link": link, "jinja": jinja}


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
for _kind, _path in _PATHS.items():
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
    request: Request, rt: RuntimeDep, settings: CurrentSettings, origin: str = ""
) -> Response:
    if origin not in rt.allowed_origins:
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
    rt: RuntimeDep,
    service: ServiceDep,
    origin: str = "",
    ticket: str = "",
    signin: str = "",
) -> Response:
    expected = request.cookies.get(EMBED_COOKIE, "")
    if origin not in rt.allowed_origins or not (expected and constant_time_equal(expected, ticket)):
        return _refusal("This sign-in window has expired; start again from the page.", 403)
    if signin == "cancelled":
        data = {"type": MESSAGE_TYPE, "status": "error", "error": "user_cancelled_authorize"}
    else:
        data = await _popup_result(request, service, origin)
    response = _message_page(secrets.token_urlsafe(12), origin, data)
    response.delete_cookie(EMBED_COOKIE, path="/embed")
    return response


async def _popup_result(request: Request, service: Service, origin: str) -> dict[str, Any]:
    """What the popup posts to the page that opened it: a session of its own for the
    embedding site (like ``apple_connect``'s cookie) and the user, or an error."""
    settings = service.settings
    token = request.cookies.get(settings.cookie_name, "")
    async with service.sessions() as db:
        user: User | None = await store.session_user(db=db, raw=token)
        if user is None:
            return {"type": MESSAGE_TYPE, "status": "error", "error": "not_signed_in"}
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
