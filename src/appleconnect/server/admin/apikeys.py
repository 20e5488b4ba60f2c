"""The API keys page (``/admin/apikeys``): list, create (shown once) and revoke."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from .. import store
from ..deps import AdminForm, AdminSession, ContainerDep
from .pages import form_text, page

__all__ = ["router"]

router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("/apikeys")
async def apikeys_page(request: Request, _admin: AdminSession, service: ContainerDep) -> Response:
    async with service.sessions() as db:
        keys = await store.list_api_keys(db=db)
    return page(request, "apikeys.html", {"keys": keys, "new_key": None})


@router.post("/apikeys")
async def create_key(request: Request, form: AdminForm, service: ContainerDep) -> Response:
    name = form_text(form, "name", 100) or "unnamed"
    async with service.sessions() as db:
        raw = await store.create_api_key(db=db, name=name, actor="admin")
        await db.commit()
        keys = await store.list_api_keys(db=db)
    return page(request, "apikeys.html", {"keys": keys, "new_key": raw})


@router.post("/apikeys/{key_id}/revoke")
async def revoke_key(_form: AdminForm, service: ContainerDep, key_id: int) -> Response:
    async with service.sessions() as db:
        await store.revoke_api_key(db=db, key_id=key_id, actor="admin")
        await db.commit()
    return RedirectResponse("/admin/apikeys?done=revoked", status_code=303)
