"""The relay's SMTP server: aiosmtpd in a thread of its own, answering as :class:`EmailRelay`
decides (``appleconnect emulator --smtp-port``, or a free port when the sandbox mounts the
emulator)."""

from __future__ import annotations

import logging
import socket

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .relay import EmailRelay

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1024 * 1024
"""The largest message the relay takes (SIZE); larger ones get ``552``."""
MAX_RECIPIENTS = 50


class RelayHandler:
    """aiosmtpd's handler: RCPT and DATA answered by the relay's rules."""

    def __init__(self, relay: EmailRelay) -> None:
        self.relay = relay

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        refusal = self.relay.check_recipient(envelope.mail_from or "", address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        return self.relay.deliver(envelope.mail_from or "", list(envelope.rcpt_tos), content)


class RelayServer:
    """The SMTP server in front of an :class:`EmailRelay`; ``port=0`` takes a free port."""

    def __init__(self, relay: EmailRelay, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.relay = relay
        self.host = host
        # aiosmtpd's controller connects to its own port to see it is up: it needs the real one.
        self.port = port or _free_port(host)
        # The controller is made when the server starts: aiosmtpd's Controller creates an event
        # loop at once and closes it only after running, so one built but never started would
        # leak the loop (and its socket pair) until garbage collection.
        self._controller: Controller | None = None

    def start(self) -> tuple[str, int]:
        """Listen; returns ``(host, port)``."""
        self._controller = Controller(
            RelayHandler(self.relay),
            hostname=self.host,
            port=self.port,
            data_size_limit=MAX_MESSAGE_BYTES,
            server_hostname="relay.emulator.invalid",
            ready_timeout=10.0,
        )
        self._controller.start()
        log.info("relay SMTP server on %s:%d", self.host, self.port)
        return self.host, self.port

    def stop(self) -> None:
        """Stop listening (the relay's mailboxes and log stay); nothing when not started."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def _free_port(host: str) -> int:
    # A port free on ``host`` right now (the system's choice for port 0).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
