"""What every admin page shares: its templates, :func:`page` (the headers and the context every
page needs), reading form fields, and recording changes in the audit log."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.requests import Request

from .. import live_settings, store
from ..deps import get_container, get_live_settings
from ..settings import Secret

__all__ = ["MESSAGES", "audit", "form_text", "page", "save_settings", "templates"]

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))

MESSAGES = {
    "saved": "Saved. The change applies now, in every process, without a restart.",
    "role": "The role was changed.",
    "deleted": "The user was deleted.",
    "revoked": "The API key was revoked.",
    "signed_out": "You are signed out of the admin panel.",
    "retry": "The email will be sent again now.",
    "discarded": "The email was discarded; it will not be sent.",
    "unchanged": "Nothing was changed: the email is being sent, was sent or was discarded.",
}


def _when(value: datetime | float | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["when"] = _when


def page(
    request: Request, name: str, context: Mapping[str, Any], *, status: int = 200
) -> HTMLResponse:
    """Render an admin page with the things every page needs (CSRF token, nonce, mode)."""
    nonce = secrets.token_urlsafe(12)
    service = get_container(request)
    settings = service.settings
    response = templates.TemplateResponse(
        request,
        name,
        {
            "csrf": request.state.admin_csrf if hasattr(request.state, "admin_csrf") else "",
            "nonce": nonce,
            "settings": settings,
            "sandbox": settings.sandbox,
            "apple_missing": service.apple.missing,
            "message": MESSAGES.get(request.query_params.get("done", "")),
            **context,
        },
        status_code=status,
    )
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; connect-src 'self'; "
        f"script-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    )
    response.headers["Cache-Control"] = "no-store"
    # "same-origin" rather than "no-referrer": with no referrer, browsers send "Origin: null" on
    # form posts, and the origin check would refuse the panel's own forms.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def form_text(form: FormData, name: str, limit: int = 2048) -> str:
    """A text field of a form, stripped and cut to ``limit`` characters (``""`` if absent)."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value.strip()[:limit]


async def audit(
    request: Request, event: str, *, sub: str | None = None, detail: Mapping[str, Any]
) -> None:
    """Record an admin action in the audit log, in a transaction of its own."""
    async with get_container(request).sessions() as db:
        await store.audit(db=db, event=event, actor="admin", sub=sub, detail=detail)
        await db.commit()


async def save_settings(
    request: Request, changes: Mapping[str, Any], *, remove: tuple[str, ...] = (), event: str
) -> None:
    """Store settings, apply them in this process now, and record the change (names only for
    secrets)."""
    service = get_container(request)
    live = get_live_settings(request)
    shown = {
        k: ("(secret)" if live_settings.EDITABLE.get(k, False) else v)
        for k, v in changes.items()
        if not isinstance(v, Secret) or k != "client_secret" or v
    }
    async with service.sessions() as db:
        await live_settings.save(db=db, encryptor=service.encryptor, changes=changes, remove=remove)
        await store.audit(
            db=db,
            event=event,
            actor="admin",
            detail={"changed": shown, "reset": list(remove)},
        )
        await db.commit()
    await live.refresh(service, force=True)
