"""The admin panel's first page (``/admin``): users, API keys and the client secret's state."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.requests import Request

from .. import store
from ..deps import AdminSession, ContainerDep
from .apple import secret_facts
from .pages import page

__all__ = ["router"]

router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("")
@router.get("/")
async def overview(request: Request, _admin: AdminSession, service: ContainerDep) -> Response:
    async with service.sessions() as db:
        users = await store.count_users(db=db)
        keys = len([k for k in await store.list_api_keys(db=db) if k.revoked_at is None])
    return page(
        request,
        "overview.html",
        {"users": users, "keys": keys, "secret": secret_facts(service, service.settings)},
    )
