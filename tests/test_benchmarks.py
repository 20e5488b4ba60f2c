"""The benchmarks still run and print what they claim to measure (tiny budgets: these check the
scripts, not the speed; the figures are recorded in docs/performance.md and docs/service.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
