"""The benchmarks still run and print what they claim to measure (tiny budgets: these check the
scripts, not the speed; the figures are recorded in docs/performance.md and docs/service.md)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from appleconnect.server import load_settings
from appleconnect.server.db import create_engine, migrate
from pg_databases import created_database

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return result.stdout


def test_verify_benchmark_prints_every_contender_with_its_ratio() -> None:
    out = run("verify.py", "--seconds", "1", "--rounds", "4")
    assert "appleconnect speedups installed: pybase64, msgspec" in out
    rows = dict(
        (name.strip(), (float(us), float(ratio)))
        for name, us, ratio in re.findall(
            r"^(.{44}) +([\d.]+) +([\d.]+) +[\d.]+-[\d.]+ +[\d.]+$", out, re.M
        )
    )
    names = sorted(rows)
    assert len(names) == 7
    for expected in (
        "bare cryptography RS256 verify",
        "floor: decode + RSA + JSON, no checks",
        "appleconnect 0.1.0",
        "appleconnect 0.1.0, standard library only",
    ):
        assert expected in rows
    for peer in ("PyJWT ", "joserfc ", "authlib "):
        assert any(name.startswith(peer) for name in names), peer
    assert rows["bare cryptography RS256 verify"][1] == 1.0
    assert all(us > 0 and ratio > 0 for us, ratio in rows.values())


def test_emulator_benchmark_prints_rsa_floor_and_exchange_rates() -> None:
    out = run("emulator.py", "--exchanges", "10", "--rounds", "2", "--rsa-rounds", "5")
    assert re.search(r"RSA-2048 signature \(the floor\): +[\d.]+ ms", out)
    assert re.search(r"token exchanges, in-memory +\d+ /s +p50 +[\d.]+ ms +p99 +[\d.]+ ms", out)
    assert re.search(r"token exchanges, SQLite state dir +\d+ /s", out)
    assert re.search(r"token exchanges, via httpx +\d+ /s", out)
    costs = re.findall(r"([\d.]+) signatures of CPU each$", out, re.M)
    assert len(costs) == 3
    assert all(float(cost) > 0 for cost in costs)


def test_framework_benchmark_prints_each_route_beside_the_floor() -> None:
    out = run("framework.py", "20", "--log")
    rows = re.findall(r"^(.+?) +([\d.]+) ms CPU per call$", out, re.M)
    assert [name for name, _ in rows] == [
        "floor GET /json",
        "GET /api/get_currentuserinfo",
        "GET /api/validate_auth_cookie",
        "GET /api/apple_request_auth (key, 400)",
    ]
    assert all(float(ms) > 0 for _, ms in rows)


def test_apple_network_benchmark_prints_both_transports_at_each_concurrency() -> None:
    out = run("apple_network.py", "32", "1", "--uvloop")
    rows = re.findall(r"^(.+?) +concurrency +(\d+): +(\d+) us/POST", out, re.M)
    assert [(name, int(c)) for name, c, _ in rows] == [
        (name, c) for c in (1, 16, 32) for name in ("httpx default", "apple_network")
    ]
    assert all(int(us) > 0 for *_, us in rows)


def test_signin_benchmark_prints_each_scenario_beside_the_floor() -> None:
    out = run("signin.py", "--requests", "8", "--levels", "1,4")
    rows = re.findall(
        r"^(\S[^\d]*?) +(\d+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)"
        r" +([\d.]+)(?: +([\d.]+))?$",
        out,
        re.M,
    )
    found = {(row[0], int(row[1])) for row in rows}
    scenarios = (
        "sign-in, new user",
        "sign-in, returning user",
        "validate_auth_cookie",
        "get_currentuserinfo",
        "floor: JSON route",
        "floor: INSERT + COMMIT",
    )
    assert found == {(name, level) for name in scenarios for level in (1, 4)}
    for row in rows:
        assert float(row[6]) > 0  # the service's (or the floor's) CPU per request was read
        if row[0].startswith("sign-in"):
            assert float(row[9]) == 1.0  # one Apple call per sign-in
    assert "service resident memory:" in out


PG_ADMIN_URL = os.environ.get(
    "APPLECONNECT_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


async def _migrate(url: str) -> None:
    engine = create_engine(load_settings(environ={}, overrides={"database_url": url}))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def empty_pg() -> Iterator[str]:
    """A fresh PostgreSQL database, not migrated, dropped afterwards."""
    name = f"appleconnect_seed_{os.getpid()}_{secrets.token_hex(4)}"
    with ExitStack() as stack:
        try:
            url = stack.enter_context(created_database(PG_ADMIN_URL, name))
        except OSError:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (CI must start it)")
            pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
        yield url


async def _rows(url: str) -> dict[str, Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            users = (await conn.execute(text("SELECT id, sub, email FROM users"))).all()
            sessions = (
                await conn.execute(
                    text("SELECT token_hash, user_id FROM sessions WHERE expires_at > now()")
                )
            ).all()
            tokens = (
                await conn.execute(
                    text(
                        "SELECT user_id, refresh_token_hash, refresh_token_encrypted FROM "
                        "apple_tokens"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    return {"users": users, "sessions": sessions, "tokens": tokens}


def test_seed_fills_a_migrated_database_and_tops_up(empty_pg: str) -> None:
    refused = subprocess.run(
        [sys.executable, str(BENCHMARKS / "seed.py"), empty_pg, "--users", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert "seed.py: the database is not migrated" in refused.stderr
    asyncio.run(_migrate(empty_pg))

    out = run("seed.py", empty_pg, "--users", "1000", "--batch", "300")
    assert "seeding users 1 to 1,000 in batches of 300" in out
    batches = re.findall(r"users [\d,]+-[\d,]+: ([\d,]+) users, ([\d,]+) sessions", out)
    assert [b[0] for b in batches] == ["300", "300", "300", "100"]
    assert all(users == sessions for users, sessions in batches)
    assert re.search(
        r"^done in [\d.]+ s: 1,000 seeded users, 1,000 live sessions, 1,000 Apple "
        r"tokens$",
        out,
        re.M,
    )
    rows = asyncio.run(_rows(empty_pg))
    assert len(rows["users"]) == 1000
    assert all(re.fullmatch(r"\d{6}\.[0-9a-f]{32}\.\d{4}", u.sub) for u in rows["users"])
    assert sum(u.email.endswith("@privaterelay.appleid.com") for u in rows["users"]) == 250
    assert {s.user_id for s in rows["sessions"]} == {u.id for u in rows["users"]}
    assert len({s.token_hash for s in rows["sessions"]}) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{64}", s.token_hash) for s in rows["sessions"])
    assert {t.user_id for t in rows["tokens"]} == {u.id for u in rows["users"]}
    assert all(t.refresh_token_encrypted.startswith("gAAAAA") for t in rows["tokens"])

    assert "already 1,000 seeded users" in run("seed.py", empty_pg, "--users", "1000")
    topped = run("seed.py", empty_pg, "--users", "1200")
    assert "seeding users 1,001 to 1,200" in topped
    assert "1,200 seeded users, 1,200 live sessions, 1,200 Apple tokens" in topped
