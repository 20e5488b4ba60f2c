"""Slow clients cannot hold connections: ``appleconnect serve`` and ``appleconnect emulator``,
real uvicorn processes on loopback, close a connection whose headers or declared body trickle
in one byte at a time, refuse a request head over 16 KB, and answer 503 beyond
``--max-connections``. Real sockets; every wait
is bounded."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from served_helpers import free_port, start_cli, stop, wait_until_up

from appleconnect._serving import ServerLimits

TIMEOUT = 2  # --header-timeout and --body-timeout of the processes under test
GIVE_UP = 12.0  # a client still connected after this long was never cut off
LIMITS = ["--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT)]
MAX_CONNECTIONS = 3

# A request whose body each server reads before it answers.
BODY_REQUESTS = {
    "serve": b"POST /auth/apple/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n",
    "emulator": b"POST /auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 400\r\n\r\n",
}


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    tmp: Path = tmp_path_factory.mktemp("slow")
    ports = {"serve": free_port(), "emulator": free_port()}
    options = ["--max-connections", str(MAX_CONNECTIONS), *LIMITS]
    service = start_cli(
        ["serve", "--port", str(ports["serve"]), "--data-dir", str(tmp / "data"), *options],
        tmp / "serve.log",
    )
    emulator = start_cli(
        ["emulator", "--port", str(ports["emulator"]), "--state-dir", str(tmp / "emu"), *options],
        tmp / "emulator.log",
    )
    try:
        wait_until_up(f"http://127.0.0.1:{ports['serve']}/openapi.json", service)
        wait_until_up(f"http://127.0.0.1:{ports['emulator']}/auth/keys", emulator)
        yield ports
    finally:
        stop(service)
        stop(emulator)


def trickle(port: int, head: bytes, drip: bytes) -> tuple[float, bytes]:
    """Send ``head``, then one byte of ``drip`` about every second until the server closes
    the connection (or :data:`GIVE_UP`); return the seconds it stayed open and what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        return trickle_connected(sock, drip)


def trickle_connected(sock: socket.socket, drip: bytes) -> tuple[float, bytes]:
    """:func:`trickle` on a connection already open."""
    received = b""
    start = time.monotonic()
    sock.settimeout(1.0)
    for byte in itertools.cycle(drip):
        if time.monotonic() - start > GIVE_UP:
            break
        try:
            sock.sendall(bytes([byte]))
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:  # reset or broken pipe: closed by the server
            break
        if not chunk:
            break
        received += chunk
    return time.monotonic() - start, received


PATHS = {"serve": "/apple/auth/keys", "emulator": "/auth/keys"}


def request(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


@pytest.mark.parametrize("server", ["serve", "emulator"])
def test_headers_sent_one_byte_a_second_are_cut_off(ports: dict[str, int], server: str) -> None:
    head = b"GET /auth/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    stayed, received = trickle(ports[server], head, b"abcdefgh")
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
    assert TIMEOUT - 0.5 < stayed < GIVE_UP


@pytest.mark.parametrize("server", ["serve", "emulator"])
def test_a_trickled_body_is_answered_408_and_cut_off(ports: dict[str, int], server: str) -> None:
    stayed, received = trickle(ports[server], BODY_REQUESTS[server], b"x")
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
    assert TIMEOUT - 0.5 < stayed < GIVE_UP


def test_an_idle_connection_that_never_sends_is_closed(ports: dict[str, int]) -> None:
    with socket.create_connection(("127.0.0.1", ports["serve"]), timeout=GIVE_UP) as sock:
        start = time.monotonic()
        received = sock.recv(4096)
        assert received.startswith(b"HTTP/1.1 408"), received
        assert sock.recv(4096) == b""
        assert time.monotonic() - start < GIVE_UP


@pytest.mark.parametrize("server", ["serve", "emulator"])
def test_one_connection_beyond_the_cap_is_answered_503(ports: dict[str, int], server: str) -> None:
    port, path = ports[server], PATHS[server]
    holders = []
    try:
        for _ in range(MAX_CONNECTIONS - 1):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /auth/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end of head
            holders.append(sock)
        time.sleep(0.2)
        # MAX_CONNECTIONS - 1 held plus this one: at the options, still served.
        assert request(port, path).startswith(b"HTTP/1.1 200 OK\r\n")
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        extra.sendall(b"GET /auth/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        holders.append(extra)
        time.sleep(0.2)
        # One beyond the options.
        assert request(port, path).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    finally:
        for sock in holders:
            sock.close()
    time.sleep(0.2)
    assert request(port, path).startswith(b"HTTP/1.1 200 OK\r\n")


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # closed with unread bytes of ours: what came back counts
        pass
    return data


@pytest.mark.parametrize("server", ["serve", "emulator"])
def test_a_head_larger_than_the_cap_is_answered_431(ports: dict[str, int], server: str) -> None:
    port, path = ports[server], PATHS[server]
    big = b"X-Big: " + b"a" * 20_000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + big + b"\r\n")
        received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), received
    # Under the cap (16 KB by default), a large head is served.
    fair = b"X-Fair: " + b"a" * 12_000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP) as sock:
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        sock.sendall(head.encode() + fair + b"\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("server", ["serve", "emulator"])
def test_a_head_that_never_ends_is_refused_once_too_large(
    ports: dict[str, int], server: str
) -> None:
    """A header line sent quickly in pieces, never ended: refused by its size, long before
    the head's deadline."""
    with socket.create_connection(("127.0.0.1", ports[server]), timeout=GIVE_UP) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /auth/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        try:
            for _ in range(40):
                sock.sendall(b"a" * 1_000)
                time.sleep(0.01)
        except OSError:  # closed by the server mid-way
            pass
        received = read_until_closed(sock)
        assert received.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        assert time.monotonic() - start < TIMEOUT


def test_blank_lines_do_not_hold_a_keep_alive_connection(ports: dict[str, int]) -> None:
    """After an answer, bytes that begin no request stop uvicorn's keep-alive timer; the
    head's deadline closes the connection instead."""
    with socket.create_connection(("127.0.0.1", ports["serve"]), timeout=5) as sock:
        sock.sendall(b"GET /apple/auth/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(answer.split(b"\r\n\r\n", 1)[1]) < length:
            answer += sock.recv(65536)
        stayed, received = trickle_connected(sock, b"\r\n")
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
    assert TIMEOUT - 0.5 < stayed < GIVE_UP


def test_limits_are_checked() -> None:
    options = ServerLimits(header_timeout=3, body_timeout=4, max_connections=7).uvicorn_options()
    assert options["limit_concurrency"] == 8
    assert options["http"].HEADER_TIMEOUT == 3
    assert options["http"].BODY_TIMEOUT == 4
    assert options["http"].MAX_HEAD_BYTES == 16_384
    with pytest.raises(ValueError, match="timeouts"):
        ServerLimits(header_timeout=0)
    with pytest.raises(ValueError, match="max_connections"):
        ServerLimits(max_connections=0)
