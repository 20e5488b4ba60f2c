"""How ``appleconnect serve`` and ``appleconnect emulator`` run uvicorn: slow clients time out.

uvicorn (as of 0.3x) has no read timeout: a client that sends its request headers, or a
declared body, one byte every few seconds holds its connection for as long as it likes, and
a rate limit inside the app never sees a request that never completes. So both commands run
uvicorn's httptools protocol (llhttp, the parser in C; uvicorn's default h11 parses in Python
and cost a noticeable share of each request's CPU: docs/performance.md#http-parser) with two
timers and a size cap (:func:`timed_protocol`):

- **headers**: from the moment a connection opens, or a keep-alive connection starts its next
  request, the request line and headers must be complete within ``header_timeout`` seconds;
  otherwise the server answers ``408 Request Timeout`` and closes the connection;
- **body**: once the headers are in, the declared body must be complete within
  ``body_timeout`` seconds; otherwise ``408`` (if no answer has started) and the connection
  is closed, and the app's next ``receive()`` gets ``http.disconnect``;
- **head size**: a request line and headers larger than ``max_head_bytes`` (counted as they
  arrive, so a head that never ends is refused as soon as it is too large) are answered
  ``431 Request Header Fields Too Large`` and the connection is closed (httptools has no limit
  of its own);

and caps concurrent connections at ``max_connections`` with uvicorn's ``limit_concurrency`` (a
request on one more connection is answered ``503``) and idle keep-alive connections with
``timeout_keep_alive``. :class:`ServerLimits` holds the numbers and
:meth:`ServerLimits.uvicorn_options` turns them into ``uvicorn.run`` keyword arguments.
docs/service.md#slow-clients.

:func:`run_server` runs the server as ``uvicorn.run`` does, with :class:`GracefulServer`: after
a graceful shutdown on SIGTERM the process exits 0 (docs/service.md#shutdown), and once the app
has started, what start-up built is set aside from the garbage collector's full collections
(:func:`settle_heap`).

This module imports only the standard library, uvicorn and httptools, so the emulator's
command may use it as well as the service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
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
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import HANDLED_SIGNALS

from appleconnect.logformat import LogFormat, lean_log_records, log_config

__all__ = [
    "GracefulServer",
    "ServerLimits",
    "listen_problem",
    "run_server",
    "settle_heap",
    "timed_protocol",
]

log = logging.getLogger(__name__)


def _closing_answer(status: bytes, text: bytes) -> bytes:
    """A whole plain-text HTTP answer after which the connection closes."""
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\n\r\n" + text
    )


_TIMEOUT_RESPONSE = _closing_answer(
    b"408 Request Timeout", b"The request was not received in time.\n"
)
_HEAD_TOO_LARGE_RESPONSE = _closing_answer(
    b"431 Request Header Fields Too Large", b"The request line and headers are too large.\n"
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
            "http": timed_protocol(self.header_timeout, self.body_timeout, self.max_head_bytes),
            # Neither service has a WebSocket route; a timed connection is never handed over.
            "ws": "none",
            # uvicorn counts the connection asking too: N served means a limit of N + 1.
            "limit_concurrency": self.max_connections + 1,
            "timeout_keep_alive": self.keep_alive_timeout,
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


def timed_protocol(
    header_timeout: float, body_timeout: float, max_head_bytes: int
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a deadline for the request head, one for its body,
    and a cap on the head's size."""

    class TimedHttpToolsProtocol(_TimedHttpToolsProtocol):
        HEADER_TIMEOUT = header_timeout
        BODY_TIMEOUT = body_timeout
        MAX_HEAD_BYTES = max_head_bytes

    return TimedHttpToolsProtocol


class _HeadTooLarge(Exception):
    """Raised in httptools' ``on_headers_complete`` to stop the parser: httptools turns it
    into an ``HttpParserError``, which uvicorn answers with :meth:`send_400_response`."""


# What the connection is reading: nothing (between requests), a head, or a declared body.
_IDLE, _HEAD, _BODY = 0, 1, 2


class _TimedHttpToolsProtocol(HttpToolsProtocol):
    """The parser's callbacks tell where the request stands; after each read, the protocol
    arms the head's or the body's deadline if that part is still incomplete, so a request
    that arrives whole in one read (nearly all of them) arms no timer of its own."""

    HEADER_TIMEOUT = 10.0
    BODY_TIMEOUT = 30.0
    MAX_HEAD_BYTES = 16_384

    _deadline: asyncio.TimerHandle | None = None
    _reading = _IDLE
    _read_bytes = 0  # the size of the read being parsed
    _head_began = False  # a head began in the read being parsed
    _head_reads = 0  # the bytes of the reads since the open head began: its largest size
    _head_bytes = 0  # the open head's size so far, as counted by _count_head
    _head_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _no_delay(transport)
        # A connection that sends nothing has the head's deadline too.
        self._arm(self.HEADER_TIMEOUT, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._read_bytes = len(data)
        self._head_began = False
        super().data_received(data)
        if self._reading == _HEAD:
            self._count_head(len(data))
        if self._deadline is not None or self.transport.is_closing():
            return
        if self._reading == _BODY:
            self._arm(self.BODY_TIMEOUT, self._body_too_slow)
        elif self._reading == _HEAD or (
            # Bytes that begin no request (blank lines) on an idle connection: uvicorn
            # stopped its keep-alive timer on them, so they must not hold the connection.
            self.timeout_keep_alive_task is None
            and (self.cycle is None or self.cycle.response_complete)
        ):
            self._arm(self.HEADER_TIMEOUT, self._head_too_slow)

    # httptools' callbacks, called while super().data_received() parses a read.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = _HEAD
        self._head_began = True

    def on_headers_complete(self) -> None:
        # Counted only if the reads that brought the head could hold one too large.
        largest = self._read_bytes + (0 if self._head_began else self._head_reads)
        if largest > self.MAX_HEAD_BYTES and self._head_size() > self.MAX_HEAD_BYTES:
            self._refuse_head()
            raise _HeadTooLarge
        self._disarm()
        self._reading = _BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = _IDLE
        self._disarm()
        if self.cycle.response_complete and self.timeout_keep_alive_task is None:
            # Answered before its body was in: the body's last bytes stopped uvicorn's
            # keep-alive timer; the now idle connection gets it back.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:  # else the 431 is out already
            super().send_400_response(msg)

    # The head's size.

    def _head_size(self) -> int:
        """The request target and the header lines the parser has reported; the request
        line's method and version and the blank line are not counted."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _count_head(self, received: int) -> None:
        """After a read that left a head incomplete: refuse the head once it is larger than
        :attr:`MAX_HEAD_BYTES`. A read wholly inside the head counts whole; of the read that
        began it, which may also hold the end of the request before, what the parser has
        reported counts (a header line still in its buffer then counts with the next read)."""
        if self._head_began:
            self._head_reads = received
            self._head_bytes = self._head_size()
        else:
            self._head_reads += received
            self._head_bytes += received
        if self._head_bytes > self.MAX_HEAD_BYTES:
            self._refuse_head()

    def _refuse_head(self) -> None:
        self._head_too_large = True
        self._disarm()
        self._close(
            f"request head larger than {self.MAX_HEAD_BYTES} bytes",
            _HEAD_TOO_LARGE_RESPONSE if self._between_answers() else None,
        )

    # The deadlines.

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._close(
            f"request headers not complete within {self.HEADER_TIMEOUT:g}s",
            _TIMEOUT_RESPONSE if self._between_answers() else None,
        )

    def _body_too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        # The request is answered unless its answer has begun, or it is a pipelined one
        # queued behind another's answer.
        answer = not cycle.response_started and not self.pipeline
        self._close(
            f"request body not complete within {self.BODY_TIMEOUT:g}s",
            _TIMEOUT_RESPONSE if answer else None,
        )
        # The app waiting in receive() gets http.disconnect; what it sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()

    def _between_answers(self) -> bool:
        """Whether no answer is due on the connection (so that one of ours is not written
        into another's): no request served yet, or the last one answered."""
        return self.cycle is None or self.cycle.response_complete

    def _close(self, why: str, answer: bytes | None) -> None:
        """Log ``why``, write ``answer`` if any, and close the connection."""
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("closed the connection of %s: %s", client, why)
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """Send each write at once (``TCP_NODELAY``). An answer goes out as two writes, head and
    body; with Nagle's algorithm on, the body waits for the client to acknowledge the head,
    which a client delays by up to 40 ms. The event loop sets it on connections it accepts
    itself, but not always on those of a listening socket it was handed (``serve --workers``:
    a median of 44 ms for a session check before this)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # the client may have gone already
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def settle_heap() -> None:
    """Collect start-up's garbage, then move every object left to the collector's permanent
    generation (:func:`gc.freeze`), out of reach of later collections.

    CPython's full collection (generation 2) visits every container object in the process: in
    the service, after start-up, some 150,000 of them (modules, the app and its routes,
    SQLAlchemy's tables, pydantic's models), 40 to 190 ms per collection on this project's
    development machine, during which no request is served. The objects built at start-up
    live as long as the process, so collecting them again finds nothing; frozen, a full
    collection visits only what was made since (docs/performance.md#tails).
    """
    gc.collect()
    gc.freeze()


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose process ends normally (exit status 0) after a graceful shutdown,
    and whose start-up heap is frozen once the app has started (:func:`settle_heap`).

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

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            settle_heap()

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
    lean_log_records()
    config = uvicorn.Config(app, **options)
    server = GracefulServer(config)
    with contextlib.suppress(KeyboardInterrupt):  # a forced Ctrl+C, as uvicorn.run
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
