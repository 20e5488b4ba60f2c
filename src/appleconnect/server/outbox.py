"""The email outbox's delivery: a background worker in every process, sharing the work safely.

A queued mail is ``pending``. A worker *claims* a due mail with one conditional ``UPDATE``
(``pending`` and due, or ``sending`` with an expired lease → ``sending`` with a new lease and a
random claim), which works alike on PostgreSQL and SQLite: when several processes try at once,
exactly one of them changes the row, and only that one sends the mail. The outcome (``sent``, or
``pending`` again with the next attempt scheduled) is recorded only under the same claim.

A failed attempt is retried after ``mail_retry_base`` seconds, doubling each time up to
``mail_retry_max``; after ``mail_max_attempts`` the mail is ``failed`` (the admin panel can retry
it). A process that stops or dies while sending leaves the mail ``sending`` with a lease of
``mail_lease`` seconds: once it has expired, any process sends it again. At a normal shutdown the
mail being sent is given the SMTP timeout to finish and be recorded.

The worker wakes when a mail is queued in its process, when the admin panel asks for a retry,
when the next mail of any process is due, and at least every :data:`POLL_INTERVAL` seconds.
Its counters (``sent``, ``failed_attempts``, ``gave_up``) are plain attributes for metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import smtplib
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from .db import DbSession
from .health import DatabaseHealth, is_database_unavailable
from .mail import send_mail
from .models import OutboxMail, utcnow
from .settings import Settings
from .store import _rows_changed as _changed

__all__ = ["POLL_INTERVAL", "OutboxWorker", "backoff", "discard", "retry_now"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 10.0
"""Seconds between two looks at the outbox when nothing is due sooner."""
BATCH = 20


def backoff(attempts: int, settings: Settings) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: the base, then twice as
    long each time, up to the maximum."""
    return float(min(settings.mail_retry_max, settings.mail_retry_base * 2 ** (attempts - 1)))


def _due(now: datetime) -> ColumnElement[bool]:
    """A mail a worker may claim now: pending and due, or sending with an expired lease."""
    return or_(
        and_(
            OutboxMail.status == "pending",
            or_(OutboxMail.next_attempt_at.is_(None), OutboxMail.next_attempt_at <= now),
        ),
        and_(
            OutboxMail.status == "sending",
            or_(OutboxMail.claimed_until.is_(None), OutboxMail.claimed_until <= now),
        ),
    )


class OutboxWorker:
    """Delivers the outbox of one process; ``run`` is its task, :meth:`wake` prods it."""

    def __init__(
        self,
        sessions: async_sessionmaker[DbSession],
        settings: Callable[[], Settings],
        health: DatabaseHealth,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.health = health
        self.sent = 0
        self.failed_attempts = 0
        self.gave_up = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the outbox now (a mail was queued, or the admin panel asked for a retry)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver due mail until cancelled; a database outage only delays it."""
        while True:
            self._wake.clear()
            try:
                delay = await self.deliver_due()
            except Exception as exc:
                if is_database_unavailable(exc):
                    self.health.failed(exc)
                else:
                    log.exception("the outbox could not be delivered")
                delay = POLL_INTERVAL
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def deliver_due(self) -> float:
        """Send every mail due now; returns the seconds until the next one may be due."""
        settings = self.settings()
        if not settings.smtp_host:
            return POLL_INTERVAL
        async with self.sessions() as db:
            ids = (
                await db.scalars(
                    select(OutboxMail.id).where(_due(utcnow())).order_by(OutboxMail.id).limit(BATCH)
                )
            ).all()
        for mail_id in ids:
            await self._deliver_shielded(mail_id, settings)
        if len(ids) == BATCH:
            return 0.0
        return await self._next_due()

    async def _deliver_shielded(self, mail_id: int, settings: Settings) -> None:
        delivery = asyncio.ensure_future(self.deliver_one(mail_id, settings))
        try:
            await asyncio.shield(delivery)
        except asyncio.CancelledError:
            # Shutting down: let the mail being sent finish and be recorded; if it cannot
            # within the SMTP timeout, its lease lets another process send it later.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(settings.smtp_timeout + 5):
                    await delivery
            raise

    async def _next_due(self) -> float:
        async with self.sessions() as db:
            pending = await db.scalar(
                select(func.min(OutboxMail.next_attempt_at)).where(OutboxMail.status == "pending")
            )
            leased = await db.scalar(
                select(func.min(OutboxMail.claimed_until)).where(OutboxMail.status == "sending")
            )
        now = utcnow()
        waits = [(t - now).total_seconds() for t in (pending, leased) if t is not None]
        return max(0.05, min([POLL_INTERVAL, *waits]))

    async def claim(self, mail_id: int, settings: Settings) -> str | None:
        """Take ``mail_id`` for this process if it is due; returns the claim, or None."""
        now = utcnow()
        token = secrets.token_hex(16)
        async with self.sessions() as db:
            changed = await _changed(
                db,
                update(OutboxMail)
                .where(OutboxMail.id == mail_id, _due(now))
                .values(
                    status="sending",
                    claim=token,
                    claimed_until=now + timedelta(seconds=settings.mail_lease),
                    attempts=OutboxMail.attempts + 1,
                ),
            )
            await db.commit()
        return token if changed == 1 else None

    async def deliver_one(self, mail_id: int, settings: Settings) -> bool:
        """Claim, send and record one mail; returns whether this call sent it."""
        token = await self.claim(mail_id, settings)
        if token is None:
            return False  # another process has it, or it is no longer due
        async with self.sessions() as db:
            mail = await db.get(OutboxMail, mail_id)
        assert mail is not None
        try:
            await asyncio.to_thread(send_mail, settings, mail)
        except (OSError, smtplib.SMTPException) as exc:
            await self._record_failure(mail, token, settings, exc)
            return False
        await self._record(
            mail_id, token, status="sent", sent_at=utcnow(), error=None, next_attempt_at=None
        )
        self.sent += 1
        return True

    async def _record_failure(
        self, mail: OutboxMail, token: str, settings: Settings, exc: Exception
    ) -> None:
        self.failed_attempts += 1
        final = mail.attempts >= settings.mail_max_attempts
        wait = backoff(mail.attempts, settings)
        log.warning(
            "welcome email %s, attempt %s, failed: %s; %s",
            mail.id,
            mail.attempts,
            exc,
            "giving up" if final else f"next attempt in {wait:g} s",
        )
        if final:
            self.gave_up += 1
        await self._record(
            mail.id,
            token,
            status="failed" if final else "pending",
            error=str(exc)[:500],
            next_attempt_at=None if final else utcnow() + timedelta(seconds=wait),
        )

    async def _record(self, mail_id: int, token: str, **values: object) -> None:
        async with self.sessions() as db:
            changed = await _changed(
                db,
                update(OutboxMail)
                .where(OutboxMail.id == mail_id, OutboxMail.claim == token)
                .values(claim=None, claimed_until=None, **values),
            )
            await db.commit()
        if changed != 1:
            log.warning("welcome email %s: its claim had expired; outcome not recorded", mail_id)


async def retry_now(*, db: DbSession, mail_id: int) -> bool:
    """Make a pending, failed or unsent (``outbox``) mail due now; caller commits.

    Returns False when the mail is being sent, was sent or discarded, or does not exist.
    """
    changed = await _changed(
        db,
        update(OutboxMail)
        .where(OutboxMail.id == mail_id, OutboxMail.status.in_(("pending", "failed", "outbox")))
        .values(status="pending", next_attempt_at=None, attempts=0, error=None),
    )
    return changed == 1


async def discard(*, db: DbSession, mail_id: int) -> bool:
    """Never send a pending, failed or unsent mail (kept, as ``discarded``); caller commits."""
    changed = await _changed(
        db,
        update(OutboxMail)
        .where(OutboxMail.id == mail_id, OutboxMail.status.in_(("pending", "failed", "outbox")))
        .values(status="discarded", next_attempt_at=None),
    )
    return changed == 1
