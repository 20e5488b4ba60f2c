"""How fast is the emulator's token endpoint?

Measures authorization-code exchanges (``POST /auth/token``) per second and their p50/p99 latency,
driven in-process through ``httpx.ASGITransport`` (no sockets, so the figure is the emulator's own
cost: form parsing, ES256 client-secret verification, one RS256 id_token signature, state
updates), and prints it beside the cost of one bare RSA-2048 PKCS#1 v1.5 signature, which is the
floor: every exchange signs an id_token.

Run: ``python benchmarks/emulator.py [--exchanges 500] [--state-dir DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from appleconnect.emulator import EmulatorState, create_emulator_app

REDIRECT = "https://example.com/auth/apple/callback"


def rsa_sign_cost(rounds: int) -> float:
    """Seconds per RSA-2048 PKCS#1 v1.5 SHA-256 signature (cryptography / OpenSSL)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = b"x" * 600
    key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    start = time.perf_counter()
    for _ in range(rounds):
        key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return (time.perf_counter() - start) / rounds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def exchanges(state_dir: Path | None, count: int) -> tuple[float, list[float]]:
    """Exchange ``count`` codes one after another; return (wall seconds, per-request seconds)."""
    app = create_emulator_app(state_dir=state_dir)
    state: EmulatorState = app.state.emulator
    team = state.default_team
    account = state.list_accounts()[0]
    now = int(state.now())
    secret = jwt.encode(
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
    codes = [
        state.issue_code(
            client_id=team.services_id,
            account_id=account.id,
            redirect_uri=REDIRECT,
            nonce="n",
            scopes=["email", "name"],
            first=False,
        ).code
        for _ in range(count + 20)
    ]
    latencies: list[float] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator.test") as client:

        async def one(code: str) -> float:
            start = time.perf_counter()
            response = await client.post(
                "/auth/token",
                data={
                    "client_id": team.services_id,
                    "client_secret": secret,
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": REDIRECT,
                },
            )
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise SystemExit(f"exchange failed: {response.text}")
            return elapsed

        for code in codes[:20]:  # warm-up
            await one(code)
        wall = time.perf_counter()
        for code in codes[20:]:
            latencies.append(await one(code))
        wall = time.perf_counter() - wall
    state.close()
    return wall, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=500)
    parser.add_argument("--rsa-rounds", type=int, default=200)
    args = parser.parse_args()

    floor = rsa_sign_cost(args.rsa_rounds)
    print(f"RSA-2048 signature (the floor):     {floor * 1000:7.3f} ms  ({1 / floor:8.0f} /s)")
    with tempfile.TemporaryDirectory() as tmp:
        for label, state_dir in (("in-memory", None), ("SQLite state dir", Path(tmp))):
            wall, latencies = asyncio.run(exchanges(state_dir, args.exchanges))
            rate = len(latencies) / wall
            print(
                f"token exchanges, {label:<17} {rate:8.0f} /s   "
                f"p50 {statistics.median(latencies) * 1000:6.2f} ms   "
                f"p99 {percentile(latencies, 0.99) * 1000:6.2f} ms   "
                f"({len(latencies)} sequential, in-process ASGI)"
            )


if __name__ == "__main__":
    main()
