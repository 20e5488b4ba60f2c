"""Mail to Apple's Private Email Relay: where it goes, what a bounce means, what Apple needs.

A user who hid their email has an address at ``privaterelay.appleid.com``. Apple forwards mail to
it only from the email sources the team registered (the From domain and the envelope domain, or
individual addresses) and refuses the rest with a permanent SMTP error. This module:

- routes mail to a relay address through the emulator's relay in sandbox mode
  (``relay_smtp_host``/``relay_smtp_port``, set by the sandbox: a real SMTP hop), and through the
  operator's SMTP server otherwise;
- tells a bounce (a permanent 5xx refusal) from a failure worth retrying, and records it on the
  user: ``email_undeliverable`` for the admin, ``email_bounces`` as a counter;
- lists the email sources a configuration needs (:func:`required_sources`).

See docs/service.md#mail-to-relay-addresses.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass

from sqlalchemy import select

from .db import DbSession
from .models import User
from .settings import Settings

__all__ = [
    "RELAY_DOMAIN",
    "SmtpTarget",
    "is_bounce",
    "is_relay_address",
    "mail_can_be_sent",
    "record_bounce",
    "required_sources",
    "smtp_target",
]

RELAY_DOMAIN = "privaterelay.appleid.com"


def is_relay_address(address: str) -> bool:
    """Whether ``address`` is a Hide My Email address of Apple's relay."""
    return address.strip().lower().endswith("@" + RELAY_DOMAIN)


@dataclass(frozen=True)
class SmtpTarget:
    """The SMTP server one message goes through."""

    host: str
    port: int
    security: str
    login: bool


def smtp_target(settings: Settings, to_address: str) -> SmtpTarget:
    """The emulator's relay for a relay address in sandbox mode, the configured server else."""
    if settings.relay_smtp_host and is_relay_address(to_address):
        return SmtpTarget(settings.relay_smtp_host, settings.relay_smtp_port, "none", login=False)
    return SmtpTarget(settings.smtp_host, settings.smtp_port, settings.smtp_security, login=True)


def mail_can_be_sent(settings: Settings, to_address: str) -> bool:
    """Whether some SMTP server takes mail to ``to_address`` (else it stays in the outbox)."""
    return bool(smtp_target(settings, to_address).host)


def any_smtp(settings: Settings) -> bool:
    """Whether any mail can be sent (an SMTP server, or the sandbox's relay)."""
    return bool(settings.smtp_host or settings.relay_smtp_host)


def is_bounce(exc: BaseException) -> bool:
    """Whether an SMTP failure is a permanent refusal of the message (5xx), not worth retrying."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600
    return False


async def record_bounce(*, db: DbSession, address: str) -> int:
    """Mark the users with this address undeliverable and count the bounce; returns how many."""
    users = (await db.execute(select(User).where(User.email == address))).scalars().all()
    for user in users:
        user.email_undeliverable = True
        user.email_bounces = (user.email_bounces or 0) + 1
    return len(users)


@dataclass(frozen=True)
class RequiredSource:
    """An email source Apple must have registered for the service's mail to reach relay users."""

    kind: str  # "domain" or "email"
    value: str
    why: str


def required_sources(settings: Settings) -> list[RequiredSource]:
    """What to register under "Sign in with Apple for Email Communication": the domain of
    ``mail_from`` (it is the envelope sender's domain too: the service sends with the From
    address as MAIL FROM) and the From address itself."""
    sender = settings.mail_from.strip()
    if "@" not in sender:
        return []
    address = sender.rpartition("<")[2].rstrip(">").strip()
    domain = address.rpartition("@")[2].lower()
    return [
        RequiredSource("domain", domain, "the envelope sender's (MAIL FROM) and From domain"),
        RequiredSource("email", address, "the From address, if you register addresses instead"),
    ]
