"""How ``appleconnect serve`` and ``appleconnect emulator`` run uvicorn: slow clients time out.

uvicorn (as of 0.3x) has no read timeout: a client that sends its request headers, or a
declared body, one byte every few seconds holds its connection for as long as it likes, and
a rate limit inside the app never sees a request that never completes. So both commands run
uvicorn's h11 protocol with two timers (:func:`timed_h11_protocol`):

- **headers**: from the moment a connection opens, or a keep-alive connection starts its next
  request, the request line and headers must be complete within ``header_timeout`` seconds;
  otherwise the server answers ``408 Request Timeout`` and closes the connection;
- **body**: once the headers are in, the declared body must be complete within
  ``body_timeout`` seconds; otherwise ``408`` (if no answer has started) and the connection
  is closed, and the app's next ``receive()`` gets ``http.disconnect``;

and caps concurrent connections at ``max_connections`` with uvicorn's ``limit_concurrency`` (a
request on one more connection is answered ``503``), idle keep-alive connections with
``timeout_keep_alive``, and the request head's size with ``h11_max_incomplete_event_size``.
:class:`ServerLimits` holds the numbers and :meth:`ServerLimits.uvicorn_options` turns them
into ``uvicorn.run`` keyword arguments. docs/service.md#slow-clients.

:func:`run_server` runs the server as ``uvicorn.run`` does, with :class:`GracefulServer`: after
a graceful shutdown on SIGTERM the process exits 0. docs/service.md#shutdown.

This module imports only the standard library, h11 and uvicorn, so the emulator's command may
use it as well as the service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import HANDLED_SIGNALS

from appleconnect.logformat import LogFormat, log_config

__all__ = ["GracefulServer", "ServerLimits", "listen_problem", "run_server", "timed_h11_protocol"]

log = logging.getLogger(__name__)

_TIMEOUT_BODY = b"The request was not received in time.\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


@dataclass(frozen=True)
class ServerLimits:
    """Timeouts (seconds) and caps for one uvicorn server; the defaults suit the service."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 500
    keep_alive_timeout: int = 5
    max_head_bytes: int = 16_384
    log_format: LogFormat = "text"

    def __post_init__(self) -> None:
        if not (0 < self.header_timeout <= 3600 and 0 < self.body_timeout <= 3600):
            raise ValueError("header and body timeouts must be between 0 and 3600 seconds.")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1.")

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``."""
        return {
            "http": timed_h11_protocol(self.header_timeout, self.body_timeout),
            # uvicorn counts the connection asking too: N served means a limit of N + 1.
            "limit_concurrency": self.max_connections + 1,
            "timeout_keep_alive": self.keep_alive_timeout,
            "h11_max_incomplete_event_size": self.max_head_bytes,
            "log_config": log_config(self.log_format),
        }


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` (the port in use, an address that is not
    this machine's), or ``None``: checked before a command prints its banner, so that the
    operator reads one line instead of a banner followed by uvicorn's ``[Errno 98]``."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot listen on {host}: {exc.strerror}; pass --host"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: a port whose old connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use; pass --port"
            return f"cannot listen on {host} port {port}: {exc.strerror}; pass --host or --port"
    return None


def timed_h11_protocol(header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for the request head and one for its body."""

    class TimedH11Protocol(_TimedH11Protocol):
        HEADER_TIMEOUT = header_timeout
        BODY_TIMEOUT = body_timeout

    return TimedH11Protocol


class _TimedH11Protocol(H11Protocol):
    HEADER_TIMEOUT = 10.0
    BODY_TIMEOUT = 30.0

    _deadline: asyncio.TimerHandle | None = None
    _timed_cycle: object = None  # the request cycle the running deadline is for

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.HEADER_TIMEOUT, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            # The first bytes of the next request on a keep-alive connection.
            self._arm(self.HEADER_TIMEOUT, self._head_too_slow)
        super().data_received(data)
        self._follow_request()

    def _follow_request(self) -> None:
        """After h11 has parsed what arrived: move from the head's deadline to the body's,
        or stop timing once the whole request is in."""
        cycle = self.cycle
        if cycle is None or self._deadline is None:
            return
        if cycle is not self._timed_cycle:  # the head is complete: a new request cycle began
            self._disarm()
            if cycle.more_body:
                self._arm(self.BODY_TIMEOUT, self._body_too_slow)
                self._timed_cycle = cycle
        elif not cycle.more_body:
            self._disarm()

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timed_cycle = self.cycle
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._time_out("request headers", self.HEADER_TIMEOUT, answer=True)

    def _body_too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        self._time_out("request body", self.BODY_TIMEOUT, answer=not cycle.response_started)
        # The app waiting in receive() gets http.disconnect; what it sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()

    def _time_out(self, what: str, seconds: float, *, answer: bool) -> None:
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning(
            "closed the connection of %s: %s not complete within %gs", client, what, seconds
        )
        if answer:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose process ends normally (exit status 0) after a graceful shutdown.

    On SIGTERM or SIGINT uvicorn stops accepting connections, lets the requests in flight
    finish, runs the app's shutdown (the service's background work, :mod:`appleconnect.server
    .container`), and then raises the signal again with its default action, so that a SIGTERM
    ends the process as "killed by SIGTERM" (status 143) although nothing was cut short. This
    server does not raise it again, unless a second Ctrl+C forced the exit before the shutdown
    was complete: then the signal ends the process as uvicorn's does.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.signals_received: list[int] = []

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals_received.append(sig)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        if self.force_exit:
            for received in reversed(self.signals_received):
                signal.raise_signal(received)


STARTUP_FAILURE = 3
"""uvicorn's exit status when the server could not start."""


def run_server(app: Any, **options: Any) -> None:
    """``uvicorn.run(app, **options)`` for one process, with :class:`GracefulServer`; exits
    with :data:`STARTUP_FAILURE` when the server could not start."""
    config = uvicorn.Config(app, **options)
    server = GracefulServer(config)
    with contextlib.suppress(KeyboardInterrupt):  # a forced Ctrl+C, as uvicorn.run
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
