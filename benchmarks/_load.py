"""A small HTTP/1.1 load generator for the benchmarks: several processes, keep-alive connections.

Each client process opens its share of the connections, sends one untimed request on each
(``warm``), and at a time common to all processes starts sending its share of the requests
(already encoded as bytes), one at a time per connection, timing each. The rows measure
requests on open keep-alive connections, not the opening of connections: a server on uvloop
accepts one new connection per turn of its event loop (libuv 1.45 and later), so the last of
64 connections opened at once waits 64 turns for its first answer, a wait of connection
set-up that would otherwise be counted in the first requests' latency. A hand-written client on
asyncio streams costs a few tens of microseconds per request, so the load generator is not what
limits the service; the CPU it used is reported beside the service's all the same.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
from dataclasses import dataclass, field


@dataclass
class Outcome:
    """What one run of requests gave: latencies (s), failures, wall time and the clients' CPU."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    started: float = float("inf")
    ended: float = 0.0
    client_cpu: float = 0.0

    @property
    def wall(self) -> float:
        return max(self.ended - self.started, 1e-9)

    def merge(self, other: Outcome) -> None:
        self.latencies += other.latencies
        self.failures += other.failures
        self.started = min(self.started, other.started)
        self.ended = max(self.ended, other.ended)
        self.client_cpu += other.client_cpu


def encode(
    method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """One HTTP/1.1 request, keep-alive, with a Content-Length when it has a body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes]:
    writer.write(raw)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _connection(
    port: int, queue: list[bytes], outcome: Outcome, warm: bytes, start_at: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        status, body = await _exchange(reader, writer, warm)
        if status != 200:
            outcome.failures.append(f"warm-up: {status} {body[:200]!r}")
        await asyncio.sleep(max(0.0, start_at - time.time()))
        while queue:
            raw = queue.pop()
            t0 = time.perf_counter()
            status, body = await _exchange(reader, writer, raw)
            outcome.latencies.append(time.perf_counter() - t0)
            if status != 200:
                outcome.failures.append(f"{status} {body[:200]!r}")
    finally:
        writer.close()


async def _client(
    port: int, requests: list[bytes], connections: int, warm: bytes, start_at: float
) -> Outcome:
    outcome = Outcome()
    queue = list(reversed(requests))
    opened = [_connection(port, queue, outcome, warm, start_at) for _ in range(connections)]
    running = asyncio.gather(*opened)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()
    outcome.started = time.time()
    await running
    outcome.ended = time.time()
    outcome.client_cpu = time.process_time() - cpu0
    return outcome


def _client_process(args: tuple[int, list[bytes], int, bytes, float]) -> Outcome:
    # No garbage collection while timing: a collection pauses every connection of this
    # process and would be counted as the server's latency. What the run allocates (its
    # latencies, the answers) is freed by reference counting or when the process ends.
    gc.freeze()  # the heap inherited from the parent at fork
    gc.disable()
    return asyncio.run(_client(*args))


def run(
    port: int,
    requests: list[bytes],
    *,
    concurrency: int,
    warm: bytes,
    processes: int | None = None,
) -> Outcome:
    """Send ``requests`` to ``127.0.0.1:port`` over ``concurrency`` connections spread over
    ``processes`` client processes (default: one per 16 connections, at most 4), each
    connection opened and answered ``warm`` (untimed, expecting 200) before the clock starts."""
    processes = processes or max(1, min(4, (concurrency + 15) // 16))
    processes = min(processes, concurrency)
    start_at = time.time() + 1.0  # time to fork the clients, open and warm the connections
    jobs = []
    for i in range(processes):
        share = concurrency // processes + (1 if i < concurrency % processes else 0)
        jobs.append((port, requests[i::processes], share, warm, start_at))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        parts = pool.map(_client_process, jobs)
    total = Outcome()
    for part in parts:
        total.merge(part)
    return total
