"""Client CPU per call to a local HTTP server: httpx's default transport against the service's
transport to Apple (``appleconnect.server.apple_network``), A/B interleaved in one process.

Starts uvicorn in a child process with a small JSON endpoint (its CPU is not counted), then for
``ROUNDS`` rounds times ``N`` POSTs through each transport, one after the other, 16 and 32
at a time, and prints the client process's CPU time per POST (``time.process_time``), the median
over the rounds. ``--uvloop`` runs the client on uvloop, as the service runs when it is
installed. docs/performance.md#calls-to-apple.

    python benchmarks/apple_network.py [N] [ROUNDS] [--uvloop]
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from appleconnect.server.apple_network import apple_http_transport

BODY = b"grant_type=authorization_code&code=c0de&client_id=com.example.app&client_secret=x"
ANSWER = json.dumps({"access_token": "a" * 40, "token_type": "Bearer", "id_token": "x" * 600})


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
    """The server's one endpoint: reads the body and answers a token-sized JSON document."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = ANSWER.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def post(client: httpx.AsyncClient, url: str) -> None:
    answer = await client.post(url, content=BODY)
    assert answer.status_code == 200, answer.status_code


async def timed(client: httpx.AsyncClient, url: str, n: int, concurrency: int) -> float:
    """Client CPU microseconds per POST."""
    started = time.process_time()
    for _ in range(n // concurrency):
        if concurrency == 1:
            await post(client, url)
        else:
            await asyncio.gather(*(post(client, url) for _ in range(concurrency)))
    return (time.process_time() - started) * 1e6 / (n // concurrency * concurrency)


async def wait_up(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                await client.post(url, content=BODY)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise SystemExit("the server did not start")


async def measure(url: str, n: int, rounds: int) -> dict[tuple[str, int], list[float]]:
    await wait_up(url)
    clients = {
        "httpx default": httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=10),
        "apple_network": httpx.AsyncClient(transport=apple_http_transport(), timeout=10),
    }
    results: dict[tuple[str, int], list[float]] = {}
    for concurrency in (1, 16, 32):
        for client in clients.values():  # warm: connections open, code paths taken
            await timed(client, url, concurrency * 4, concurrency)
        for _ in range(rounds):
            for name, client in clients.items():
                us = await timed(client, url, n, concurrency)
                results.setdefault((name, concurrency), []).append(us)
    for client in clients.values():
        await client.aclose()
    return results


def main(n: int, rounds: int, use_uvloop: bool) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])  # noqa: S603
    try:
        work = measure(f"http://127.0.0.1:{port}/auth/token", n, rounds)
        if use_uvloop:
            import uvloop

            results = uvloop.run(work)
        else:
            results = asyncio.run(work)
    finally:
        server.terminate()
        server.wait()
    for (name, concurrency), values in results.items():
        low, median, high = min(values), statistics.median(values), max(values)
        spread = f"{low:.0f}-{high:.0f}"
        print(f"{name:14} concurrency {concurrency:2}: {median:5.0f} us/POST ({spread})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    else:
        numbers = [int(a) for a in sys.argv[1:] if a.isdigit()]
        main(*(numbers + [2000, 5][len(numbers) :])[:2], use_uvloop="--uvloop" in sys.argv)
