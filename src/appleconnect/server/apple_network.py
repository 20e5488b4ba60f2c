"""The network under the service's calls to Apple: an httpcore network backend on asyncio.

httpx reaches the network through httpcore, whose default backend on asyncio goes through
anyio: every read and write opens a cancel scope with a deadline and looks the current task
up, and the connection pool asks each idle pooled connection whether it is readable on every
request, which anyio answers with a ``poll()`` system call. Measured per call to a local server
this is about a fifth of the client's CPU per request (docs/performance.md#calls-to-apple).

This backend talks to asyncio's transports directly: a :class:`asyncio.Protocol` keeps what the
event loop has read, a read waits on one future with one timer, a write only waits when the
transport asks to pause, and "is readable" is answered from what the loop has already seen
(data buffered, end of stream, connection lost) without a system call. The loop reads an idle
connection continuously, so a connection the server closed is known as soon as its end of
stream arrives; the window left is the one any pool has, a close that crosses the request.

:func:`apple_http_transport` is the service's default transport to Apple: httpx's own
:class:`httpx.AsyncHTTPTransport` (its request, response and exception mapping unchanged) over
an httpcore pool (:class:`~.apple_pool.FairConnectionPool`) that uses this backend.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import socket
import ssl
from asyncio import staggered
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import httpcore
import httpx

from .apple_pool import FairConnectionPool

__all__ = ["AsyncioBackend", "AsyncioStream", "apple_http_transport"]

_PAUSE_READING = 256 * 1024
"""Bytes read but not yet consumed above which the loop stops reading the connection."""
_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)
"""httpx's default limits (``httpx._config.DEFAULT_LIMITS``, not exported), but every connection
kept until idle for ``keepalive_expiry`` (5 s), not only 20: under more than 20 sign-ins at once,
httpx's 20 closed a connection as one answer came and opened another for the next call, a TCP
and TLS handshake each (at 64 at once, 62 of 470 calls to Apple went out on a new connection,
and waited for it: docs/performance.md#tails)."""
_EXTRA_INFO = {
    "ssl_object": "ssl_object",
    "client_addr": "sockname",
    "server_addr": "peername",
    "socket": "socket",
}
"""httpcore's names for what it asks of a stream, and asyncio's for the same."""
_HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next address of a host is tried alongside (anyio's delay too)."""


def _text(error: BaseException) -> str:
    return str(error) or repr(error)


def _wake(waiter: asyncio.Future[bool] | None, value: bool) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(value)


async def _wait(waiter: asyncio.Future[bool], seconds: float | None) -> bool:
    """Wait for ``waiter``: ``False`` if ``seconds`` passed first.

    One timer on the loop, not a task or a cancel scope: this runs for every read that finds
    nothing buffered."""
    if seconds is None:
        return await waiter
    timer = waiter.get_loop().call_later(seconds, _wake, waiter, False)
    try:
        return await waiter
    finally:
        timer.cancel()


class _Connection(asyncio.Protocol):
    """What the event loop has read from one connection and whether it can still be written."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.readable: asyncio.Future[bool] | None = None
        self.drained: asyncio.Future[bool] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not derive from asyncio's classes.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > _PAUSE_READING and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        _wake(self.readable, True)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self.readable, True)
        return False  # close the transport: HTTP/1.1 has no use for a half-open connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        _wake(self.readable, True)
        _wake(self.drained, True)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.drained, True)

    def take(self, max_bytes: int) -> bytes:
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.size -= len(chunk)
        if self.reading_paused and self.size <= _PAUSE_READING // 2 and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()
        return chunk


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection as httpcore uses it, on an asyncio transport (plain or TLS)."""

    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        connection = self._connection
        while not connection.chunks:
            if connection.eof:
                if connection.error is not None:
                    raise httpcore.ReadError(_text(connection.error))
                return b""
            waiter = connection.readable = asyncio.get_running_loop().create_future()
            try:
                if not await _wait(waiter, timeout):
                    raise httpcore.ReadTimeout("timed out reading from the connection")
            finally:
                connection.readable = None
        return connection.take(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        connection = self._connection
        if connection.eof and connection.error is not None:
            raise httpcore.WriteError(_text(connection.error))
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        while connection.writing_paused and not self._transport.is_closing():
            waiter = connection.drained = asyncio.get_running_loop().create_future()
            try:
                if not await _wait(waiter, timeout):
                    raise httpcore.WriteTimeout("timed out writing to the connection")
            finally:
                connection.drained = None
        if connection.error is not None:
            raise httpcore.WriteError(_text(connection.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    self._transport, self._connection, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from exc
        except OSError as exc:  # ssl.SSLError (certificate verify failed...) is an OSError
            self._transport.close()
            raise httpcore.ConnectError(_text(exc)) from exc
        if tls is None:  # the server closed during the handshake (typed Optional by asyncio)
            self._transport.close()
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._transport = self._connection.transport = tls
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # What the loop has already seen: no system call (httpcore asks this of every idle
            # pooled connection on every request).
            connection = self._connection
            return bool(connection.chunks) or connection.eof or self._transport.is_closing()
        name = _EXTRA_INFO.get(info)
        return None if name is None else self._transport.get_extra_info(name)


def _set_options(stream: AsyncioStream, options: Iterable[httpcore.SOCKET_OPTION] | None) -> None:
    sock = stream.get_extra_info("socket")
    for option in options or ():
        sock.setsockopt(*option)


async def _connect(
    host: str, port: int, local: tuple[str, int] | None
) -> tuple[asyncio.Transport, _Connection]:
    """A connection to ``host``, racing its addresses as anyio does (Happy Eyeballs: the next
    address starts :data:`_HAPPY_EYEBALLS_DELAY` seconds after the previous one if that has not
    connected yet), on any event loop: uvloop's ``create_connection`` has no
    ``happy_eyeballs_delay``. An address literal is not looked up."""
    loop = asyncio.get_running_loop()
    try:
        addresses = [(str(ipaddress.ip_address(host)), port)]
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = _interleave([info[4][:2] for info in infos if info[0] in _FAMILIES])
    opened: list[asyncio.BaseTransport] = []
    settled = False

    async def attempt(address: tuple[str, int]) -> tuple[asyncio.Transport, _Connection]:
        transport, connection = await loop.create_connection(
            _Connection, address[0], address[1], local_addr=local
        )
        if settled:  # another address won meanwhile
            transport.close()
            raise ConnectionAbortedError("another address connected first")
        opened.append(transport)
        return transport, connection

    if len(addresses) == 1:
        return await attempt(addresses[0])
    winner: tuple[asyncio.Transport, _Connection] | None = None
    try:
        attempts = [functools.partial(attempt, address) for address in addresses]
        winner, _index, errors = await staggered.staggered_race(attempts, _HAPPY_EYEBALLS_DELAY)
    finally:
        settled = True
        for transport in opened:
            if winner is None or transport is not winner[0]:
                transport.close()
    if winner is None:
        raise next((e for e in errors if e is not None), OSError(f"no address for {host}"))
    return winner


_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def _interleave(addresses: list[Any]) -> list[tuple[str, int]]:
    """The addresses alternating between families, the resolver's first family first."""
    first = [a for a in addresses if ":" in a[0]] if addresses and ":" in addresses[0][0] else []
    first = first or [a for a in addresses if ":" not in a[0]]
    second = [a for a in addresses if a not in first]
    mixed = [a for pair in itertools.zip_longest(first, second) for a in pair if a is not None]
    return [(str(a[0]), int(a[1])) for a in mixed]


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens connections with the running loop's ``create_connection``: a timeout is an
    :class:`httpcore.ConnectTimeout`, any other failure to connect a
    :class:`httpcore.ConnectError`. The methods' ``timeout`` parameters are httpcore's
    interface."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await _connect(host, port, local)
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(_text(exc)) from exc
        stream = AsyncioStream(transport, connection)
        _set_options(stream, socket_options)
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_unix_connection(_Connection, path)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"timed out connecting to {path}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(_text(exc)) from exc
        stream = AsyncioStream(transport, connection)
        _set_options(stream, socket_options)
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _AppleHTTPTransport(httpx.AsyncHTTPTransport):
    """httpx's transport whose httpcore pool runs on :class:`AsyncioBackend`.

    A subclass that replaces the pool rather than a transport of our own: httpx's
    ``AsyncHTTPTransport`` has no ``network_backend`` parameter, and what it does around the
    pool (building the httpcore request, mapping httpcore's exceptions to httpx's, wrapping the
    response stream, closing) lives in private helpers of ``httpx._transports``. Inheriting it
    keeps that behaviour exactly httpx's, and the one private name relied on, ``_pool``, is
    checked by a test that a request really goes through this backend."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        uds: str | None = None,
    ) -> None:
        context = ssl_context or httpx.create_ssl_context()
        super().__init__(verify=context, limits=limits, uds=uds)
        self._pool = FairConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            uds=uds,
            network_backend=AsyncioBackend(),
        )


def apple_http_transport(
    ssl_context: ssl.SSLContext | None = None,
    limits: httpx.Limits | None = None,
    uds: str | None = None,
) -> httpx.AsyncHTTPTransport:
    """An :class:`httpx.AsyncHTTPTransport` over :class:`AsyncioBackend`: httpx's default
    certificate verification (certifi, ``SSL_CERT_FILE``) unless ``ssl_context`` is given,
    httpx's default limits, with every connection kept alive, unless ``limits`` is."""
    return _AppleHTTPTransport(
        ssl_context=ssl_context,
        limits=limits or _DEFAULT_LIMITS,
        uds=uds,
    )
