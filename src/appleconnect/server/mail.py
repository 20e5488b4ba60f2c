"""The welcome email: queued in the database with the new user, sent through SMTP by the outbox's
worker (:mod:`.outbox`).

Without an SMTP host, mail stays in the outbox with status ``outbox`` for the admin panel to
show. Relay addresses (``@privaterelay.appleid.com``) go through the emulator's relay in sandbox
mode and are mailed like any other in production; Apple forwards them only from registered
email sources, and a refusal is recorded on the user (:mod:`.relay_mail`, docs/service.md).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from sqlalchemy import insert

from .models import OutboxMail, User, table_of, utcnow
from .relay_mail import mail_can_be_sent, smtp_target
from .settings import Settings

__all__ = ["OUTBOX_INSERT", "send_mail", "welcome_values"]


OUTBOX_INSERT = insert(table_of(OutboxMail))


def welcome_values(*, settings: Settings, user: User) -> dict[str, Any] | None:
    """The outbox row of a new user's welcome email, when enabled and the user has an address
    (the sign-in's transaction inserts it, :mod:`.signin_rows`)."""
    if not settings.welcome_email or not user.email:
        return None
    name = user.first_name or "there"
    body = (
        f"Hello {name},\n\n"
        f"Your account at {settings.public_url} was created with Sign in with Apple.\n"
        "Sign in again at any time with the same Apple Account.\n"
    )
    return {
        "to_address": user.email,
        "subject": settings.welcome_subject,
        "body": body,
        "created_at": utcnow(),
        "status": "pending" if mail_can_be_sent(settings, user.email) else "outbox",
        "attempts": 0,
    }


def send_mail(settings: Settings, mail: OutboxMail) -> None:
    """Send one message through the configured SMTP server (blocking: run it in a thread).

    Raises ``OSError`` or ``smtplib.SMTPException`` when the server cannot be reached or
    refuses the message.
    """
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = mail.to_address
    message["Subject"] = mail.subject
    message.set_content(mail.body)
    target = smtp_target(settings, mail.to_address)
    smtp: smtplib.SMTP
    if target.security == "tls":
        smtp = smtplib.SMTP_SSL(
            target.host,
            target.port,
            timeout=settings.smtp_timeout,
            context=ssl.create_default_context(),
        )
    else:
        smtp = smtplib.SMTP(target.host, target.port, timeout=settings.smtp_timeout)
    with smtp:
        if target.security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if target.login and settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password.get())
        smtp.send_message(message)
