"""The email outbox page (``/admin/outbox``): the queued mail and its delivery state, with
"retry now" and "discard" for a mail that is not sent yet (see :mod:`..outbox`)."""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from .. import store
from ..container import ServiceContainer
from ..db import DbSession
from ..deps import AdminForm, AdminSession, ContainerDep
from .pages import page

__all__ = ["router"]

router = APIRouter(prefix="/admin", include_in_schema=False)

LIMIT = 200


class MailChange(Protocol):
    async def __call__(self, *, db: DbSession, mail_id: int) -> bool: ...


@router.get("/outbox")
async def outbox_page(request: Request, _admin: AdminSession, service: ContainerDep) -> Response:
    async with service.sessions() as db:
        mails = await store.recent_mails(db=db, limit=LIMIT)
    return page(request, "outbox.html", {"mails": mails, "smtp_host": service.settings.smtp_host})


async def _change(service: ServiceContainer, mail_id: int, change: MailChange, event: str) -> bool:
    """Apply ``change`` to one mail and, when it applied, audit ``event``, in one transaction."""
    async with service.sessions() as db:
        done = await change(db=db, mail_id=mail_id)
        if done:
            await store.audit(db=db, event=event, actor="admin", detail={"id": mail_id})
        await db.commit()
    return done


@router.post("/outbox/{mail_id}/retry")
async def retry_mail(_form: AdminForm, service: ContainerDep, mail_id: int) -> Response:
    """Send a pending or failed mail now (its attempts start again from zero)."""
    done = await _change(service, mail_id, store.retry_mail, "admin.mail_retry")
    if done and service.outbox is not None:
        service.outbox.wake()
    return RedirectResponse(f"/admin/outbox?done={'retry' if done else 'unchanged'}", 303)


@router.post("/outbox/{mail_id}/discard")
async def discard_mail(_form: AdminForm, service: ContainerDep, mail_id: int) -> Response:
    """Never send a mail that is not sent yet."""
    done = await _change(service, mail_id, store.discard_mail, "admin.mail_discarded")
    return RedirectResponse(f"/admin/outbox?done={'discarded' if done else 'unchanged'}", 303)
