"""Benchmark: complete ``apple_connect`` sign-ins against the emulator, over loopback.

Starts the emulator and the service as separate processes (the service on SQLite in a temporary
directory, or on ``--database-url``), then for concurrency 1, 16 and 64 prints sign-ins per
second and p50/p99 latency of ``POST /api/apple_connect``, the calls made to "Apple" per sign-in
(counted from the emulator's access log; goal: exactly one, the code exchange), and the
service's resident memory. Codes are fetched from the emulator's control API before timing.

    python benchmarks/signin.py [--requests 400] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

APPLE_PATHS = re.compile(r'"(GET|POST) /auth/(token|keys|revoke|usermigrationinfo)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def get_codes(client: httpx.AsyncClient, apple: str, app_id: str, n: int) -> list[str]:
    async def one(i: int) -> str:
        response = await client.post(
            f"{apple}/emulator/authorize",
            json={
                "client_id": app_id,
                "response_type": "code",
                "state": f"benchmark-state-{i:08d}-{os.urandom(8).hex()}",
                "account": "maria.ruiz@example.com",
            },
        )
        response.raise_for_status()
        return str(response.json()["params"]["code"])

    sem = asyncio.Semaphore(16)

    async def bounded(i: int) -> str:
        async with sem:
            return await one(i)

    return list(await asyncio.gather(*(bounded(i) for i in range(n))))


async def run_level(
    service: str, key: str, codes: list[str], concurrency: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(codes)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            while queue:
                code = queue.pop()
                t0 = time.perf_counter()
                response = await client.post(
                    f"{service}/api/apple_connect", data={"key": key, "code": code}
                )
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise SystemExit(f"sign-in failed: {response.status_code} {response.text}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(codes) / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="sign-ins per level")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="appleconnect-bench-"))
    apple_port, service_port = free_port(), free_port()
    apple = f"http://127.0.0.1:{apple_port}"
    service = f"http://127.0.0.1:{service_port}"
    apple_log = (tmp / "emulator.log").open("w")
    emulator = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from appleconnect.emulator import serve; "
            "serve(host='127.0.0.1', port=int(sys.argv[1]), state_dir=Path(sys.argv[2]), "
            "issuer=None, control_api=True)",
            str(apple_port),
            str(tmp / "emulator"),
        ],
        stdout=apple_log,
        stderr=subprocess.STDOUT,
    )
    procs = [emulator]
    try:
        wait_for(apple + "/auth/keys")
        creds = json.loads((tmp / "emulator" / "credentials.json").read_text())
        env = {
            **os.environ,
            "APPLECONNECT_MODE": "sandbox",
            "APPLECONNECT_PUBLIC_URL": service,
            "APPLECONNECT_APPLE_BASE_URL": apple,
            "APPLECONNECT_TEAM_ID": creds["team_id"],
            "APPLECONNECT_KEY_ID": creds["key_id"],
            "APPLECONNECT_PRIVATE_KEY": creds["private_key_pem"],
            "APPLECONNECT_CLIENT_ID": creds["services_id"],
            "APPLECONNECT_APP_IDS": creds["app_id"],
            "APPLECONNECT_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            # Rate limiting stays on (its database write is part of the cost measured), with
            # limits that one client IP and one key sending every sign-in do not reach.
            "APPLECONNECT_RATE_LIMIT_PER_IP": "100000000",
            "APPLECONNECT_RATE_LIMIT_PER_KEY": "100000000",
        }
        if args.database_url:
            env["APPLECONNECT_DATABASE_URL"] = args.database_url
        server = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [
                sys.executable,
                "-c",
                "import logging, sys; from pathlib import Path; "
                "from appleconnect.sandbox import serve; "
                "serve(host='127.0.0.1', port=int(sys.argv[1]), data_dir=Path(sys.argv[2]), "
                "config=None)",
                str(service_port),
                str(tmp / "service"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(server)
        wait_for(service + "/healthz")
        key = (tmp / "service" / "demo-api-key.txt").read_text().strip()
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
        print(f"python {platform.python_version()}; database: {args.database_url or 'SQLite'}")
        print(
            f"{'concurrency':>11} {'sign-ins/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'Apple calls/sign-in':>20}"
        )
        # Warm-up: the first sign-in fetches Apple's keys and mints the client secret once.
        warm = asyncio.run(get_codes(httpx.AsyncClient(), apple, creds["app_id"], 4))
        asyncio.run(run_level(service, key, warm, 1))
        for concurrency in (1, 16, 64):

            async def codes_for_level() -> list[str]:
                async with httpx.AsyncClient(timeout=60) as client:
                    return await get_codes(client, apple, creds["app_id"], args.requests)

            codes = asyncio.run(codes_for_level())
            apple_log.flush()
            before = len(APPLE_PATHS.findall((tmp / "emulator.log").read_text()))
            rate, latencies = asyncio.run(run_level(service, key, codes, concurrency))
            time.sleep(0.2)
            after = len(APPLE_PATHS.findall((tmp / "emulator.log").read_text()))
            q = statistics.quantiles(latencies, n=100)
            print(
                f"{concurrency:>11} {rate:>11.1f} {q[49] * 1000:>8.1f} {q[98] * 1000:>8.1f} "
                f"{(after - before) / len(codes):>20.2f}"
            )
        print(f"service resident memory: {rss_mib(server.pid):.1f} MiB")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        apple_log.close()


if __name__ == "__main__":
    main()
