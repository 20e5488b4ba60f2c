"""The embedding page (``/admin/embed``): the snippet generator and the origins allowed to
open the sign-in popup (docs/embedding.md)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from appleconnect.buttons import LOCALES

from ..deps import AdminForm, AdminSession, get_container, get_live_settings
from ..embedding import BUTTON_FIELDS, SnippetOptions, snippets
from .pages import form_text, page, save_settings

__all__ = ["parse_origins", "router"]

router = APIRouter(prefix="/admin", include_in_schema=False)


def parse_origins(text: str) -> tuple[tuple[str, ...], str | None]:
    """Allowed origins, one a line; returns ``(origins, first invalid line or None)``."""
    origins: list[str] = []
    for line in text.replace(",", "\n").splitlines():
        value = line.strip().rstrip("/")
        if not value:
            continue
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
        ):
            return (), value
        origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return tuple(dict.fromkeys(origins)), None


def _embed_context(request: Request, options: SnippetOptions) -> dict[str, Any]:
    live = get_live_settings(request)
    return {
        "options": options,
        "fields": BUTTON_FIELDS,
        "locales": LOCALES,
        "snippets": snippets(get_container(request).settings.public_url, options),
        "preview_url": options.image_url(""),
        "origins": live.allowed_origins,
        "origins_text": "\n".join(live.allowed_origins),
        "origins_error": None,
        "query": urlencode(options.query()),
    }


@router.get("/embed")
async def embed_page(request: Request, _admin: AdminSession) -> Response:
    options = SnippetOptions.from_query(request.query_params)
    return page(request, "embed.html", _embed_context(request, options))


@router.post("/embed/origins")
async def embed_origins(request: Request, form: AdminForm) -> Response:
    origins, bad = parse_origins(form_text(form, "origins", 4096))
    if bad:
        context = _embed_context(request, SnippetOptions())
        context["origins_error"] = f"Not an origin (scheme://host[:port]): {bad}"
        context["origins_text"] = form_text(form, "origins", 4096)
        return page(request, "embed.html", context, status=400)
    await save_settings(
        request, {"embed_allowed_origins": origins}, event="admin.embed_origins_changed"
    )
    return RedirectResponse("/admin/embed?done=saved", status_code=303)
