"""The read-only records: the audit log and Apple's notifications."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.requests import Request

from .. import store
from ..deps import AdminSession, ContainerDep
from .pages import page

__all__ = ["NOTIFICATION_EVENTS", "router"]

router = APIRouter(prefix="/admin", include_in_schema=False)

LIMIT = 200
NOTIFICATION_EVENTS = (
    "apple.email-disabled",
    "apple.email-enabled",
    "apple.consent-revoked",
    "apple.account-delete",
    "apple.account-deleted",
)


@router.get("/audit")
async def audit_page(
    request: Request, _admin: AdminSession, service: ContainerDep, sub: str = ""
) -> Response:
    sub = sub[:255]
    async with service.sessions() as db:
        events = await store.recent_audit_events(db=db, sub=sub or None, limit=LIMIT)
    return page(request, "audit.html", {"events": events, "sub": sub})


@router.get("/notifications")
async def notifications_page(
    request: Request, _admin: AdminSession, service: ContainerDep
) -> Response:
    async with service.sessions() as db:
        events = await store.recent_audit_events(
            db=db, actor="apple", events=NOTIFICATION_EVENTS, limit=LIMIT
        )
    return page(request, "notifications.html", {"events": events})
