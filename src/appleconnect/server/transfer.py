"""User migration after an app transfer between teams (Apple's TN3159), with the library.

The sending team runs :func:`export_transfer_subs` before the transfer: each user gets the
``transfer_sub`` that Apple computes for the recipient team. The recipient team runs
:func:`import_transfer_subs` within 60 days: each ``transfer_sub`` is exchanged for the user's
``sub`` in the new team and the account is re-keyed. A user who signs in to the new team first
is linked by the ``transfer_sub`` claim of their id_token (:func:`store.upsert_user`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from appleconnect import AppleConnectError, AsyncAppleClient

from . import store
from .container import ServiceContainer
from .db import DbSession
from .models import User

__all__ = ["TransferReport", "export_transfer_subs", "import_transfer_subs"]

log = logging.getLogger(__name__)
_BATCH = 200


@dataclass
class TransferReport:
    """What a migration run did; ``failed`` maps user ids to the reason (Apple's, for logs)."""

    done: int = 0
    unchanged: int = 0
    failed: dict[int, str] = field(default_factory=dict)


async def _each_user(
    service: ServiceContainer,
    only_transferred: bool,
    step: Callable[[DbSession, User], Awaitable[bool]],
) -> TransferReport:
    """Run ``step`` on every user, in id order, each in its own transaction."""
    report = TransferReport()
    last_id = 0
    while True:
        query = select(User.id).where(User.id > last_id).order_by(User.id).limit(_BATCH)
        if only_transferred:
            query = query.where(User.transfer_sub.is_not(None))
        async with service.sessions() as db:
            batch = (await db.scalars(query)).all()
        if not batch:
            return report
        for user_id in batch:
            last_id = user_id
            async with service.sessions() as db:
                user = await db.get(User, user_id)
                if user is None:  # deleted meanwhile
                    continue
                try:
                    changed = await step(db, user)
                except (AppleConnectError, _Refused) as exc:
                    log.warning("migrating user %s failed: %s", user_id, exc)
                    report.failed[user_id] = str(exc)
                    continue
                await db.commit()
            if changed:
                report.done += 1
            else:
                report.unchanged += 1


def _client(service: ServiceContainer) -> AsyncAppleClient:
    return service.apple.client(service.settings.client_id)


async def export_transfer_subs(*, service: ServiceContainer, target_team_id: str) -> TransferReport:
    """Sending team: store each user's ``transfer_sub`` for ``target_team_id``."""
    client = _client(service)

    async def step(db: DbSession, user: User) -> bool:
        transfer_sub = await client.transfer_sub_for(user.sub, target_team_id)
        if user.transfer_sub == transfer_sub:
            return False
        user.transfer_sub = transfer_sub
        await store.audit(
            db=db,
            event="user.transfer_exported",
            actor="cli",
            sub=user.sub,
            detail={"target_team_id": target_team_id},
        )
        return True

    return await _each_user(service, False, step)


async def import_transfer_subs(*, service: ServiceContainer) -> TransferReport:
    """Recipient team: re-key each user with a ``transfer_sub`` to their ``sub`` in this team."""
    client = _client(service)

    async def step(db: DbSession, user: User) -> bool:
        assert user.transfer_sub is not None
        info = await client.sub_for_transfer(user.transfer_sub)
        if user.sub == info.sub:
            return False
        transfer_sub = user.transfer_sub
        relinked = await db.run_sync(
            lambda s: store.relink_transferred_user(
                conn=s.connection(), transfer_sub=transfer_sub, new_sub=info.sub, via="import"
            )
        )
        if not relinked:
            raise _Refused(f"another account already has the new sub {info.sub}")
        user = await db.get(User, user.id, populate_existing=True) or user
        if info.email:
            user.email = info.email
            user.is_private_email = bool(info.is_private_email)
        return True

    return await _each_user(service, True, step)


class _Refused(Exception):
    """A user that cannot be migrated (the new ``sub`` already has an account: never merged)."""
