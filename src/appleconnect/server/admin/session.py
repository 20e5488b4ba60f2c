"""Signing in to the admin panel with a one-time link, and signing out (see :mod:`.auth`)."""

from __future__ import annotations

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

_USED_LINK = (
    "This login link was already used or has expired. Make a new one with "
    "`appleconnect admin login-link`."
)


@router.get("/login")
async def login_page(request: Request, token: str = "") -> Response:
    return page(request, "login.html", {"token": token[:200], "error": None})


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
        ok = isinstance(token, str) and await store.consume_admin_login(db=db, raw=token)
        if not ok:
            return page(request, "login.html", {"token": "", "error": _USED_LINK}, status=403)
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
