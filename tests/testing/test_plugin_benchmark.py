"""benchmarks/plugin.py still runs and prints what it claims to measure (tiny counts: this checks
the script, not the speed; the figures are recorded in docs/testing.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "plugin.py"


def test_plugin_benchmark_prints_both_goals_beside_the_rsa_costs() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--tests", "5", "--signins", "5", "--keygens", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    for label in (
        "RSA-2048 key generation (median)",
        "RSA-2048 signature (median)",
        "a fresh in-memory emulator (median)",
        "first apple_emulator test (imports, builds)",
        "sign_in + exchange_code, CPU time (median)",
    ):
        assert re.search(rf"^{re.escape(label)} +[\d.]+ ms$", out, re.M), label
    goals = dict(
        re.findall(
            r"^(.+?) +p50 +[\d.]+ ms +p99 +[\d.]+ ms +best round +[\d.]+ ms"
            r" +goal p50 <= ([\d.]+) ms: (?:met|MISSED)$",
            out,
            re.M,
        )
    )
    assert goals == {
        "apple_emulator setup+teardown": "10",
        "sign_in + exchange_code, in-process": "2",
    }
    assert re.search(r"^pytest setup\+teardown, no fixture +p50 +[\d.]+ ms", out, re.M)
