"""The welcome email: queued in the database with the new user, delivered through SMTP.

Without an SMTP host (sandbox mode), mail stays in the outbox with status ``outbox`` for the
admin panel to show. Relay addresses (``@privaterelay.appleid.com``) are mailed like any other;
Apple forwards them only from registered email sources (docs/service.md).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage

from sqlalchemy.ext.asyncio import async_sessionmaker

from . import store
from .db import DbSession
from .models import OutboxMail, User, utcnow
from .settings import Settings

__all__ = ["deliver_pending", "queue_welcome"]

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5


def queue_welcome(*, db: DbSession, settings: Settings, user: User) -> OutboxMail | None:
    """Queue the welcome email for a new user, when enabled and the user has an address."""
    if not settings.welcome_email or not user.email:
        return None
    name = user.first_name or "there"
    body = (
        f"Hello {name},\n\n"
        f"Your account at {settings.public_url} was created with Sign in with Apple.\n"
        "Sign in again at any time with the same Apple Account.\n"
    )
    mail = OutboxMail(
        to_address=user.email,
        subject=settings.welcome_subject,
        body=body,
        created_at=utcnow(),
        status="pending" if settings.smtp_host else "outbox",
        attempts=0,
    )
    db.add(mail)
    return mail


def _send(settings: Settings, mail: OutboxMail) -> None:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = mail.to_address
    message["Subject"] = mail.subject
    message.set_content(mail.body)
    smtp: smtplib.SMTP
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(
            settings.smtp_host,
            settings.smtp_port,
            timeout=settings.smtp_timeout,
            context=ssl.create_default_context(),
        )
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password.get())
        smtp.send_message(message)


async def deliver_pending(
    *, sessions: async_sessionmaker[DbSession], settings: Settings, limit: int = 20
) -> int:
    """Send queued mail; returns how many were sent. Safe to run in several processes.

    Each message is claimed with a conditional UPDATE (``pending`` → ``sending``) before it is
    sent, so two processes never send the same message.
    """
    if not settings.smtp_host:
        return 0
    sent = 0
    async with sessions() as db:
        ids = await store.pending_mail_ids(db=db, max_attempts=MAX_ATTEMPTS, limit=limit)
    for mail_id in ids:
        async with sessions() as db:
            claimed = await store.claim_mail(db=db, mail_id=mail_id)
            await db.commit()
            if not claimed:
                continue
            mail = await db.get(OutboxMail, mail_id)
            assert mail is not None
            try:
                await asyncio.to_thread(_send, settings, mail)
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("welcome email %s to %s failed: %s", mail.id, mail.to_address, exc)
                mail.status = "pending" if mail.attempts < MAX_ATTEMPTS else "failed"
                mail.error = str(exc)[:500]
            else:
                mail.status = "sent"
                mail.sent_at = utcnow()
                mail.error = None
                sent += 1
            await db.commit()
    return sent
