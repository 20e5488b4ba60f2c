"""The timed httptools protocol of :mod:`appleconnect._serving` in the corners the real
processes do not reach (tests/server/test_server_slow_clients.py covers the common ones): a
tiny ASGI app served by uvicorn in a thread with that protocol, raw sockets on loopback, short
deadlines. Every wait is bounded."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from appleconnect._serving import ServerLimits

DEADLINE = 1.0  # the header and body timeouts of the server under test
KEEP_ALIVE = 1
GIVE_UP = 8.0

received_events: list[dict[str, Any]] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/early`` answers without reading its body; ``/read`` reads the whole body and
    records what ``receive()`` gave; any other path answers its own path."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/read":
        while True:
            event = await receive()
            received_events.append(event)
            if event["type"] == "http.disconnect" or not event.get("more_body"):
                break
    body = path.encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    limits = ServerLimits(
        header_timeout=DEADLINE, body_timeout=DEADLINE, keep_alive_timeout=KEEP_ALIVE
    )
    options = limits.uvicorn_options() | {"log_config": None, "log_level": "critical"}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", **options))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def read_until_closed(sock: socket.socket) -> tuple[float, bytes]:
    """Everything the server writes until it closes, and how many seconds that took."""
    start, data = time.monotonic(), b""
    sock.settimeout(GIVE_UP)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - start, data


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer (the app's answers carry a Content-Length)."""
    sock.settimeout(GIVE_UP)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
        data.lower().split(b"content-length: ")[1].split(b"\r\n")[0]
    ):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        _, data = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert data.index(b"/one") < data.index(b"/two")


def test_a_pipelined_head_left_incomplete_is_answered_408(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHo")
        stayed, data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 408 Request Timeout\r\n" in data
    assert b"/two" not in data
    assert DEADLINE - 0.3 < stayed < GIVE_UP


def test_a_late_body_gives_the_app_a_disconnect(port: int) -> None:
    received_events.clear()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        stayed, data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
    assert DEADLINE - 0.3 < stayed < GIVE_UP
    time.sleep(0.2)
    assert received_events[0]["body"] == b"abc"
    assert received_events[-1] == {"type": "http.disconnect"}


def test_a_body_in_pieces_within_the_deadline_is_read(port: int) -> None:
    received_events.clear()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
        time.sleep(DEADLINE / 3)
        sock.sendall(b"cd")
        time.sleep(DEADLINE / 3)
        sock.sendall(b"ef")
        assert read_answer(sock).startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"".join(event.get("body", b"") for event in received_events) == b"abcdef"


def test_an_answer_before_the_body_leaves_the_keep_alive_timeout(port: int) -> None:
    """The app answers before the body is in; the rest of the body arrives; the connection,
    idle, closes after the keep-alive timeout without a 408."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        assert read_answer(sock).startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(b"cd")
        stayed, data = read_until_closed(sock)
    assert data == b""
    assert stayed < GIVE_UP


def test_a_keep_alive_request_in_pieces_within_the_deadline_is_served(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for path in (b"/one", b"/two"):
            for piece in (b"GET " + path, b" HTTP/1.1\r\nHo", b"st: x\r\n\r\n"):
                sock.sendall(piece)
                time.sleep(DEADLINE / 4)
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert answer.endswith(path)


def test_answers_are_sent_without_nagle_delay_on_a_handed_socket() -> None:
    """``serve --workers`` hands uvicorn a listening socket; connections accepted from it
    must still have TCP_NODELAY, or a two-write answer waits for the client's delayed ACK."""
    import uvloop

    from appleconnect._serving import _no_delay

    async def check() -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        accepted: asyncio.Future[asyncio.BaseTransport] = asyncio.get_running_loop().create_future()

        class Keep(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.set_result(transport)

        server = await asyncio.get_running_loop().create_server(Keep, sock=listener)
        client = socket.create_connection(listener.getsockname())
        try:
            transport = await asyncio.wait_for(accepted, GIVE_UP)
            _no_delay(transport)
            sock = transport.get_extra_info("socket")
            nodelay = int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()
            return nodelay
        finally:
            client.close()
            server.close()

    # asyncio sets it only on sockets whose proto is IPPROTO_TCP, and socket.socket() makes 0.
    assert asyncio.run(check()) == 1
    assert uvloop.run(check()) == 1


FROZEN_APP = """
import gc, json, sys
from appleconnect._serving import run_server

built = {}

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        built["at start-up"] = ["a container"]  # made after the modules, by the app's start
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    later = ["a container"]
    tracked = gc.get_objects()  # the collector's generations, not its permanent one
    answer = json.dumps({
        "frozen": gc.get_freeze_count(),
        "start-up object collectable": any(o is built["at start-up"] for o in tracked),
        "request object collectable": any(o is later for o in tracked),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})

run_server(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_the_start_up_heap_is_left_out_of_later_collections() -> None:
    """Once the app has started, what start-up built is frozen (settle_heap): a full
    collection, which would visit it all again, visits only what requests made since."""
    import subprocess
    import sys

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", FROZEN_APP, str(free)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{free}/", timeout=GIVE_UP).json()
                break
            except httpx.TransportError:
                assert server.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
    assert answer["frozen"] > 10_000  # the interpreter, uvicorn and the app's modules
    assert answer["start-up object collectable"] is False
    assert answer["request object collectable"] is True
