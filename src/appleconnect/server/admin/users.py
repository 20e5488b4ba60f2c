"""The users page (``/admin/users``): search, change a role, delete a user."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from .. import store
from ..deps import AdminForm, AdminSession, ContainerDep
from ..errors import ServiceError
from ..signin import delete_account
from .pages import form_text, page

__all__ = ["PAGE_SIZE", "router"]

router = APIRouter(prefix="/admin", include_in_schema=False)

PAGE_SIZE = 100


@router.get("/users")
async def users_page(
    request: Request, _admin: AdminSession, service: ContainerDep, q: str = ""
) -> Response:
    q = q.strip()[:200]
    async with service.sessions() as db:
        users = await store.search_users(db=db, q=q, limit=PAGE_SIZE)
    return page(request, "users.html", {"users": users, "q": q, "report": None})


@router.post("/users/{user_id}/role")
async def change_role(
    request: Request, form: AdminForm, service: ContainerDep, user_id: int
) -> Response:
    role = form_text(form, "role", 64)
    if role not in service.settings.roles:
        return page(request, "message.html", {"text": "Unknown role."}, status=400)
    async with service.sessions() as db:
        changed = await store.set_user_role(db=db, user_id=user_id, role=role)
        if changed is None:
            return page(request, "message.html", {"text": "No such user."}, status=404)
        user, old = changed
        await store.audit(
            db=db,
            event="admin.role_changed",
            actor="admin",
            sub=user.sub,
            detail={"from": old, "to": role},
        )
        await db.commit()
    return RedirectResponse("/admin/users?done=role", status_code=303)


@router.post("/users/{user_id}/delete")
async def delete_user(
    request: Request, _form: AdminForm, service: ContainerDep, user_id: int
) -> Response:
    try:
        report = await delete_account(service=service, user_id=user_id, actor="admin")
    except ServiceError:
        return page(request, "message.html", {"text": "No such user."}, status=404)
    return page(request, "users.html", {"users": [], "q": "", "report": report})
