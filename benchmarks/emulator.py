"""How fast is the emulator's token endpoint?

Measures authorization-code exchanges (``POST /auth/token``) per second and their p50/p99
latency, in-process: each request is handed to the emulator's ASGI app directly (no socket, no
HTTP client), so the figure is the emulator's own cost: routing, form parsing, the client
secret's checks, the state updates and one RS256 id_token signature. It is printed beside the
floor measured in the same run, one bare RSA-2048 PKCS#1 v1.5 signature: every exchange signs an
id_token. Exchanges and signatures are measured in interleaved rounds, so that both see the same
machine; the rate is the median round's and the best round's.

A last row drives the same exchanges through ``httpx.ASGITransport``, as test suites do: the
difference is the HTTP client's own cost.

Run: ``python benchmarks/emulator.py [--exchanges 2000] [--rounds 5] [--rsa-rounds 400]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from appleconnect.emulator import EmulatorState, create_emulator_app

REDIRECT = "https://example.com/auth/apple/callback"
BASE = "http://emulator.test"
Post = Callable[[bytes], Awaitable[int]]


_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_sign_cost(rounds: int) -> float:
    """Seconds per RSA-2048 PKCS#1 v1.5 SHA-256 signature (cryptography / OpenSSL)."""
    return rsa_sign_costs(rounds)[0]


def rsa_sign_costs(rounds: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread) per RSA-2048 PKCS#1 v1.5 SHA-256 signature."""
    message = b"x" * 600
    _KEY.sign(message, padding.PKCS1v15(), hashes.SHA256())
    start, cpu = time.perf_counter(), time.thread_time()
    for _ in range(rounds):
        _KEY.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return (time.perf_counter() - start) / rounds, (time.thread_time() - cpu) / rounds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def asgi_poster(app: Any) -> Post:
    """POST a form to ``/auth/token`` by calling the ASGI app itself; returns the status."""

    async def post(body: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/auth/token",
            "raw_path": b"/auth/token",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"emulator.test"),
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("emulator.test", 80),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = 0

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    return post


def httpx_poster(client: httpx.AsyncClient) -> Post:
    """The same POST through ``httpx.ASGITransport``."""

    async def post(body: bytes) -> int:
        headers = {"content-type": "application/x-www-form-urlencoded"}
        response = await client.post("/auth/token", content=body, headers=headers)
        return response.status_code

    return post


class Bench:
    """One emulator with codes to exchange and a client secret (PyJWT, as any client mints it)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.app = create_emulator_app(state_dir=state_dir, base_url=BASE)
        self.state: EmulatorState = self.app.state.emulator
        team = self.state.default_team
        now = int(self.state.now())
        self.secret = jwt.encode(
            {
                "iss": team.team_id,
                "iat": now,
                "exp": now + 3600,
                "aud": "https://appleid.apple.com",
                "sub": team.services_id,
            },
            team.private_key_pem,
            algorithm="ES256",
            headers={"kid": team.key_id},
        )

    def bodies(self, count: int) -> list[bytes]:
        team = self.state.default_team
        account = self.state.list_accounts()[0]
        out = []
        for _ in range(count):
            code = self.state.issue_code(
                client_id=team.services_id,
                account_id=account.id,
                redirect_uri=REDIRECT,
                nonce="n",
                scopes=["email", "name"],
                first=False,
            ).code
            form = {
                "client_id": team.services_id,
                "client_secret": self.secret,
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
            }
            out.append(urllib.parse.urlencode(form).encode())
        return out


async def exchange_round(post: Post, bodies: list[bytes]) -> tuple[float, float, list[float]]:
    """Exchange each body's code one after another: (wall seconds, CPU seconds of this thread,
    per-request wall seconds)."""
    latencies: list[float] = []
    wall, cpu = time.perf_counter(), time.thread_time()
    for body in bodies:
        start = time.perf_counter()
        status = await post(body)
        latencies.append(time.perf_counter() - start)
        if status != 200:
            raise SystemExit(f"exchange failed with HTTP {status}")
    return time.perf_counter() - wall, time.thread_time() - cpu, latencies


async def measure(
    bench: Bench, post: Post, per_round: int, rounds: int, rsa_rounds: int
) -> dict[str, Any]:
    await exchange_round(post, bench.bodies(20))  # warm-up
    rates, floors, cpu_ratios, latencies = [], [], [], []
    for _ in range(rounds):
        floor_wall, floor_cpu = rsa_sign_costs(rsa_rounds)
        floors.append(1 / floor_wall)
        wall, cpu, round_latencies = await exchange_round(post, bench.bodies(per_round))
        rates.append(per_round / wall)
        cpu_ratios.append(cpu / per_round / floor_cpu)
        latencies.extend(round_latencies)
    return {"rates": rates, "floors": floors, "cpu_ratios": cpu_ratios, "latencies": latencies}


def row(label: str, result: dict[str, Any]) -> str:
    rates, latencies = result["rates"], result["latencies"]
    median_rate, best = statistics.median(rates), max(rates)
    cost = statistics.median(result["cpu_ratios"])
    return (
        f"token exchanges, {label:<17} {median_rate:8.0f} /s   "
        f"p50 {statistics.median(latencies) * 1000:6.3f} ms   "
        f"p99 {percentile(latencies, 0.99) * 1000:6.3f} ms   "
        f"best round {best:6.0f} /s   {cost:4.2f} signatures of CPU each"
    )


async def run(args: argparse.Namespace) -> None:
    per_round = max(1, args.exchanges // args.rounds)
    floor = statistics.median(rsa_sign_cost(args.rsa_rounds) for _ in range(args.rounds))
    print(f"RSA-2048 signature (the floor):     {floor * 1000:7.3f} ms  ({1 / floor:8.0f} /s)")
    with tempfile.TemporaryDirectory() as tmp:
        for label, state_dir in (("in-memory", None), ("SQLite state dir", Path(tmp))):
            bench = Bench(state_dir)
            result = await measure(
                bench, asgi_poster(bench.app), per_round, args.rounds, args.rsa_rounds
            )
            print(row(label, result))
            bench.state.close()
    bench = Bench(None)
    transport = httpx.ASGITransport(app=bench.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        result = await measure(bench, httpx_poster(client), per_round, args.rounds, args.rsa_rounds)
    print(row("via httpx", result))
    bench.state.close()
    print(
        f"({args.rounds} rounds of {per_round} sequential exchanges, interleaved with rounds of "
        f"{args.rsa_rounds} RSA signatures; rates are the median round's; the cost in signatures "
        "compares the CPU time of this thread, which other processes on the machine disturb "
        "least)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=2000, help="exchanges per row")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rsa-rounds", type=int, default=400, help="signatures per floor round")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
