"""The admin panel's router: one router per page, all under ``/admin`` and out of the OpenAPI
document (docs/admin.md describes the pages)."""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    apikeys,
    apple,
    embed,
    logs,
    new_users,
    outbox,
    overview,
    session,
    users,
    verify,
)

__all__ = ["router"]

router = APIRouter()
for _page in (session, overview, apple, verify, new_users, users, apikeys, logs, outbox, embed):
    router.include_router(_page.router)
