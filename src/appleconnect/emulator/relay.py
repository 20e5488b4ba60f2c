"""Apple's Private Email Relay, emulated: what happens to a message sent to a relay address.

Apple forwards mail to a Hide My Email address (``...@privaterelay.appleid.com``) only from the
email sources the app's team registered, and only while the user keeps forwarding on:

- the relay address must be one the emulator issued to a team that still has the user's consent
  (otherwise ``550 5.1.1``, at RCPT);
- at most :data:`DAILY_LIMIT` messages a day reach one relay address (then ``452 4.2.2``);
- SPF path: the envelope sender's domain (or the address itself) is registered for the team;
  DKIM path otherwise (an email provider's envelope): the header From's domain (or address) is
  registered and the message carries a DKIM signature that verifies, with ``d=`` that domain.
  The public key comes from the registered source, not DNS. A failure is ``550 5.1.1 bad
  mailbox name``, at DATA;
- forwarding off: accepted and dropped (recorded in the log, not in the mailbox).

:class:`EmailRelay` decides, delivers into each Apple ID's mailbox and keeps a log of every
message; :mod:`.smtp` puts it behind a real SMTP server. Everything is in memory. See
docs/emulator.md#private-email-relay.
"""

from __future__ import annotations

import collections
import email.policy
import email.utils
import logging
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import dkim

from .email_sources import EmailSources
from .state import RELAY_DOMAIN, EmulatorState

log = logging.getLogger(__name__)

DAILY_LIMIT = 100
"""Messages a day one relay address takes (Apple's documented figure)."""
MAX_MAILBOX = 500
"""Messages kept per Apple ID; the oldest go first."""
MAX_LOG = 2000
"""Relay-log entries kept; the oldest go first."""
MAX_BODY_CHARS = 64 * 1024
"""Characters of a message's text kept in the mailbox."""

UNKNOWN = "550 5.1.1 bad mailbox name"
BAD_SOURCE = "550 5.1.1 bad mailbox name"
OVER_LIMIT = "452 4.2.2 relay address over its daily limit"
OK = "250 OK"


@dataclass(frozen=True)
class Recipient:
    """A relay address the emulator issued, with the Apple ID and team behind it."""

    relay_address: str
    account_id: str
    team_id: str
    real_address: str
    forwarding: bool


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class EmailRelay:
    """The relay's rules, mailboxes, daily counts and log (thread-safe)."""

    def __init__(self, state: EmulatorState, sources: EmailSources | None = None) -> None:
        self.state = state
        self.sources = sources if sources is not None else EmailSources()
        self._lock = threading.Lock()
        self._mailboxes: dict[str, collections.deque[dict[str, Any]]] = {}
        self._log: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOG)
        self._counts: dict[tuple[str, int], int] = {}

    # -- reading -------------------------------------------------------------------------------

    def recipient(self, address: str) -> Recipient | None:
        """Who receives mail sent to ``address``, if the emulator issued it and it is in use."""
        address = address.strip().lower()
        if _domain(address) != RELAY_DOMAIN:
            return None
        for account in self.state.list_accounts():
            for consent in self.state.consents_of(account.id):
                relay = self.state.relay_email_for(account.id, consent.team_id)
                if not consent.share_email and relay == address:
                    return Recipient(
                        relay_address=relay,
                        account_id=account.id,
                        team_id=consent.team_id,
                        real_address=account.email,
                        forwarding=account.forwarding.get(consent.team_id, True),
                    )
        return None

    def mailbox(self, account_id: str) -> list[dict[str, Any]]:
        """The messages delivered to an Apple ID, oldest first."""
        with self._lock:
            return list(self._mailboxes.get(account_id, ()))

    def log(self) -> list[dict[str, Any]]:
        """What happened to each message (and why), oldest first."""
        with self._lock:
            return list(self._log)

    def clear(self) -> None:
        """Empty every mailbox, the log and the daily counts (sources stay)."""
        with self._lock:
            self._mailboxes.clear()
            self._log.clear()
            self._counts.clear()

    # -- the SMTP steps ------------------------------------------------------------------------

    def _day(self) -> int:
        return int(self.state.now() // 86400)

    def check_recipient(self, mail_from: str, address: str) -> str | None:
        """The refusal of ``RCPT TO:<address>`` (None: accepted for now)."""
        recipient = self.recipient(address)
        if recipient is None:
            self._record(mail_from, address, None, "refused", "unknown relay address", UNKNOWN)
            return UNKNOWN
        with self._lock:
            count = self._counts.get((recipient.relay_address, self._day()), 0)
        if count >= DAILY_LIMIT:
            reason = f"{DAILY_LIMIT} messages today already"
            self._record(mail_from, address, recipient, "refused", reason, OVER_LIMIT)
            return OVER_LIMIT
        return None

    def deliver(self, mail_from: str, addresses: list[str], data: bytes) -> str:
        """Apply the source rules to a message and deliver, drop or refuse it: the DATA reply."""
        message = BytesParser(policy=email.policy.default).parsebytes(data)
        recipients = [r for r in map(self.recipient, addresses) if r is not None]
        problems = {
            r.relay_address: self.source_problem(r.team_id, mail_from, message, data)
            for r in recipients
        }
        if any(problems.values()):
            for r in recipients:
                reason = problems[r.relay_address] or "another recipient's team refused the source"
                self._record(mail_from, r.relay_address, r, "refused", reason, BAD_SOURCE, message)
            return BAD_SOURCE
        for r in recipients:
            self._accept(mail_from, r, message)
        return OK

    def _accept(self, mail_from: str, recipient: Recipient, message: EmailMessage) -> None:
        if not recipient.forwarding:
            reason = "the user turned forwarding off for this team"
            self._record(
                mail_from, recipient.relay_address, recipient, "dropped", reason, OK, message
            )
            return
        entry = self._record(
            mail_from,
            recipient.relay_address,
            recipient,
            "delivered",
            "source registered",
            OK,
            message,
        )
        entry = {**entry, "body": _text_of(message)}
        with self._lock:
            key = (recipient.relay_address, self._day())
            self._counts = {k: v for k, v in self._counts.items() if k[1] == key[1]}
            self._counts[key] = self._counts.get(key, 0) + 1
            box = self._mailboxes.setdefault(
                recipient.account_id, collections.deque(maxlen=MAX_MAILBOX)
            )
            box.append(entry)
        log.info(
            "relay: delivered %s to Apple ID %s", recipient.relay_address, recipient.account_id
        )

    # -- the rules -----------------------------------------------------------------------------

    def source_problem(
        self, team_id: str, mail_from: str, message: EmailMessage, data: bytes
    ) -> str | None:
        """Why Apple would refuse this message from ``mail_from`` for ``team_id`` (None: it
        passes the SPF path or the DKIM path)."""
        envelope_domain = _domain(mail_from)
        if self.sources.has_domain(team_id, envelope_domain) or self.sources.has_address(
            team_id, mail_from
        ):
            return None
        header_from = email.utils.parseaddr(str(message.get("From", "")))[1]
        from_domain = _domain(header_from) if "@" in header_from else ""
        if not from_domain or not (
            self.sources.has_domain(team_id, from_domain)
            or self.sources.has_address(team_id, header_from)
        ):
            return (
                f"neither the envelope sender's domain {envelope_domain!r} nor the From "
                f"address {header_from!r} is a registered email source of team {team_id}"
            )
        signers = self._verified_dkim_domains(team_id, data)
        if not signers:
            return (
                f"envelope domain {envelope_domain!r} is not registered and no DKIM "
                "signature verifies"
            )
        if from_domain not in signers:
            signed = ", ".join(sorted(signers))
            return f"DKIM d={signed} does not match the From domain {from_domain!r}"
        return None

    def _verified_dkim_domains(self, team_id: str, data: bytes) -> set[str]:
        # The d= of every DKIM signature that verifies, the keys taken from the team's sources.
        def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
            text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
            return self.sources.dkim_txt(team_id, text)

        count = sum(1 for line in data.split(b"\n") if line.lower().startswith(b"dkim-signature:"))
        domains: set[str] = set()
        for index in range(min(count, 5)):
            verifier = dkim.DKIM(data)
            try:
                ok = verifier.verify(idx=index, dnsfunc=lookup)
            except Exception as exc:  # dkimpy raises several kinds for a malformed signature
                log.info("relay: DKIM signature %d unreadable: %s", index, exc)
                continue
            if ok and verifier.domain:
                domains.add(verifier.domain.decode("ascii", "replace").lower())
        return domains

    def _record(
        self,
        mail_from: str,
        address: str,
        recipient: Recipient | None,
        outcome: str,
        reason: str,
        reply: str,
        message: EmailMessage | None = None,
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "received_at": self.state.now(),
            "mail_from": mail_from,
            "relay_address": address.lower(),
            "team_id": recipient.team_id if recipient else None,
            "account_id": recipient.account_id if recipient else None,
            "to": recipient.real_address if recipient else None,
            "from": str(message.get("From", "")) if message is not None else None,
            "subject": str(message.get("Subject", "")) if message is not None else None,
            "outcome": outcome,
            "reason": reason,
            "smtp_reply": reply,
        }
        with self._lock:
            self._log.append(entry)
        log.info("relay: %s for %s: %s (%s)", outcome, address, reason, reply)
        return entry


def _text_of(message: EmailMessage) -> str:
    # The message's plain text (or its first part's), size-limited.
    part = message.get_body(preferencelist=("plain", "html"))
    try:
        content = part.get_content() if part is not None else ""
    except (LookupError, ValueError):
        content = ""
    return str(content)[:MAX_BODY_CHARS]
