"""Signing in to the admin panel with a one-time link, and signing out (see :mod:`.auth`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from .. import store
from ..deps import AdminForm, ContainerDep, admin_same_origin
from . import auth
from .pages import page

__all__ = ["router"]

router = APIRouter(prefix="/admin", include_in_schema=False)

# What the login page shows for a link that cannot be used (``store.admin_login_link``), and
# with which status; the page adds how to make a new link.
_REFUSED = {
    "used": ("This login link was already used: each link opens one admin session.", 410),
    "expired": (
        "This login link has expired: it worked for {minutes} minutes after it was made.",
        410,
    ),
    "unknown": (
        "This login link is not one this service made: it may be cut short (copy the whole "
        "link), expired more than a day ago, or made for another data directory.",
        404,
    ),
}


def _refused_page(request: Request, reason: str, lifetime: timedelta) -> Response:
    """The page for a link that cannot be used; ``lifetime``: the one the link was made with."""
    text, status = _REFUSED[reason]
    minutes = max(1, int(lifetime.total_seconds()) // 60)
    context = {"token": "", "error": text.format(minutes=minutes)}
    return page(request, "login.html", context, status=status)


@router.get("/login")
async def login_page(request: Request, service: ContainerDep, token: str = "") -> Response:
    """The link's page: a button that uses it (a GET never does: mail scanners fetch links),
    or, for a link that cannot be used, why and how to make a new one."""
    if not token:
        return page(request, "login.html", {"token": "", "error": None})
    async with service.sessions() as db:
        state, lifetime = await store.admin_login_link(db=db, raw=token)
    if state != "usable":
        return _refused_page(request, state, lifetime)
    return page(request, "login.html", {"token": token, "error": None})


@router.post("/login")
async def login(
    request: Request,
    service: ContainerDep,
    _origin: Annotated[None, Depends(admin_same_origin)],
) -> Response:
    settings = service.settings
    form = await request.form(max_files=0, max_fields=5)
    token = form.get("token")
    async with service.sessions() as db:
        raw = token if isinstance(token, str) else ""
        if not await store.consume_admin_login(db=db, raw=raw):
            state, lifetime = await store.admin_login_link(db=db, raw=raw)
            return _refused_page(request, "used" if state == "usable" else state, lifetime)
        session = await auth.create_admin_session(db=db)
        await store.audit(db=db, event="admin.signed_in", actor="admin", detail={})
        await db.commit()
    response = RedirectResponse("/admin", status_code=303)
    name, path = auth.admin_cookie(settings)
    response.set_cookie(
        name,
        session,
        max_age=auth.SESSION_TTL,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="strict",
        path=path,
    )
    return response


@router.post("/logout")
async def logout(request: Request, service: ContainerDep, _form: AdminForm) -> Response:
    name, path = auth.admin_cookie(service.settings)
    raw = request.cookies.get(name, "")
    async with service.sessions() as db:
        await auth.end_admin_session(db=db, raw=raw)
        await store.audit(db=db, event="admin.signed_out", actor="admin", detail={})
        await db.commit()
    response = RedirectResponse("/admin/login?done=signed_out", status_code=303)
    response.delete_cookie(name, path=path, secure=service.settings.cookie_secure)
    return response
