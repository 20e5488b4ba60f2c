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
Its counters (``sent``, ``failed_attempts``, ``gave_up``, ``relay_bounces``) are plain attributes
for metrics. A permanent refusal of a relay address is a bounce: not retried, and recorded on the
user (:mod:`.relay_mail`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import smtplib
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker

from . import store
from .db import DbSession
from .health import DatabaseHealth, is_database_unavailable
from .mail import send_mail
from .models import OutboxMail, utcnow
from .relay_mail import any_smtp, is_bounce, is_relay_address, mail_can_be_sent, record_bounce
from .settings import Settings

__all__ = ["POLL_INTERVAL", "OutboxWorker", "backoff"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 10.0
"""Seconds between two looks at the outbox when nothing is due sooner."""
BATCH = 20


def backoff(attempts: int, settings: Settings) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: the base, then twice as
    long each time, up to the maximum."""
    return float(min(settings.mail_retry_max, settings.mail_retry_base * 2 ** (attempts - 1)))


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
        self.relay_bounces = 0
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
        if not any_smtp(settings):
            return POLL_INTERVAL
        async with self.sessions() as db:
            ids = await store.due_mail_ids(db=db, now=utcnow(), limit=BATCH)
        for mail_id in ids:
            await self._deliver_shielded(mail_id, settings)
        if not settings.smtp_host:
            # Only the sandbox's relay: mail to other addresses waits for an SMTP host.
            return POLL_INTERVAL
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
            due = await store.next_mail_due(db=db)
        if due is None:
            return POLL_INTERVAL
        return max(0.05, min(POLL_INTERVAL, (due - utcnow()).total_seconds()))

    async def claim(self, mail_id: int, settings: Settings) -> str | None:
        """Take ``mail_id`` for this process if it is due; returns the claim, or None."""
        token = secrets.token_hex(16)
        async with self.sessions() as db:
            claimed = await store.claim_mail(
                db=db, mail_id=mail_id, claim=token, now=utcnow(), lease=settings.mail_lease
            )
            await db.commit()
        return token if claimed else None

    async def deliver_one(self, mail_id: int, settings: Settings) -> bool:
        """Claim, send and record one mail; returns whether this call sent it."""
        async with self.sessions() as db:
            queued = await db.get(OutboxMail, mail_id)
        if queued is None or not mail_can_be_sent(settings, queued.to_address):
            return False  # no SMTP server for this address (sandbox without smtp_host)
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
        bounced = is_relay_address(mail.to_address) and is_bounce(exc)
        if bounced:
            await self._record_bounce(mail)
        final = bounced or mail.attempts >= settings.mail_max_attempts
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

    async def _record_bounce(self, mail: OutboxMail) -> None:
        # Apple refused the message for good: no retry, and the user is marked undeliverable.
        self.relay_bounces += 1
        async with self.sessions() as db:
            users = await record_bounce(db=db, address=mail.to_address)
            await db.commit()
        log.warning("welcome email %s bounced at Apple's relay (%d user(s) marked)", mail.id, users)

    async def _record(self, mail_id: int, token: str, **values: object) -> None:
        async with self.sessions() as db:
            recorded = await store.finish_mail(db=db, mail_id=mail_id, claim=token, **values)
            await db.commit()
        if not recorded:
            log.warning("welcome email %s: its claim had expired; outcome not recorded", mail_id)
