"""Benchmark: the service's hot paths against the emulator, over loopback, beside the stack's floor.

Starts the emulator, the service (SQLite in a temporary directory, or ``--database-url``; one
process, or ``--workers N``) and the floor app (``benchmarks/floor_app.py``: a FastAPI route
answering JSON, and one doing a single Core INSERT + COMMIT, on the same database and with the
same server and options) as separate processes. For each concurrency level it first signs in
as many users at once as the level has (untimed: the service then holds its connections to
Apple), then times, on connections already open and answered once,

- ``POST /api/apple_connect`` for a new user and for a returning one (codes minted through the
  emulator's control API before timing; each sign-in makes exactly one call to Apple, counted
  from the emulator's access log),
- ``validate_auth_cookie`` and ``get_currentuserinfo`` with sessions those sign-ins opened,
- the two floor routes,

and prints requests/s, p50/p99 latency, and the CPU that each process spent per request (read
from ``/proc``): the service's, the emulator's and the load generator's, so that neither the
emulator nor the client is counted as the service's. The load generator (``benchmarks/_load.py``)
spreads the connections over several processes.

    python benchmarks/signin.py [--requests 400] [--database-url URL] [--workers N]
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
from cryptography.fernet import Fernet

from _load import Outcome, encode, run

APPLE_PATHS = re.compile(r'"(GET|POST) /auth/(token|keys|revoke|usermigrationinfo)')
BENCHMARKS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a ``--workers`` service forks its worker processes)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return found


def cpu_ns(pid: int) -> dict[int, int]:
    """The CPU time (ns) each thread of ``pid`` and its descendants has run, by thread id.

    From ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds): ``/proc/<pid>/stat`` counts
    in clock ticks (10 ms), coarser than a few hundred fast requests.
    """
    found = {}
    for p in process_tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                found[int(task.name)] = int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def cpu_between(before: dict[int, int], after: dict[int, int]) -> float:
    """Seconds of CPU the threads ran between two :func:`cpu_ns` readings (a thread that
    ended in between is not counted: the service's threads live as long as it does)."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items()) / 1e9


def rss_mib(pid: int) -> list[float]:
    sizes = []
    for p in process_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


@dataclass
class Stack:
    """The processes of one run and what the benchmark needs to talk to them."""

    tmp: Path
    apple: str
    service_port: int
    floor_port: int
    emulator: subprocess.Popen[bytes]
    service: subprocess.Popen[bytes]
    floor: subprocess.Popen[bytes]
    app_id: str
    key: str

    def apple_calls(self) -> int:
        return len(APPLE_PATHS.findall((self.tmp / "emulator.log").read_text()))


def _start_emulator(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from pathlib import Path; from appleconnect.emulator import serve; "
        "from appleconnect._serving import run_server; "
        "serve(host='127.0.0.1', port=int(sys.argv[1]), state_dir=Path(sys.argv[2]), "
        "issuer=None, control_api=True, run=run_server)"
    )
    log = (tmp / "emulator.log").open("w")
    return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", code, str(port), str(tmp / "emulator")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _service_env(creds: dict[str, str], apple: str, port: int, database_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "APPLECONNECT_MODE": "sandbox",
        "APPLECONNECT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "APPLECONNECT_APPLE_BASE_URL": apple,
        "APPLECONNECT_TEAM_ID": creds["team_id"],
        "APPLECONNECT_KEY_ID": creds["key_id"],
        "APPLECONNECT_PRIVATE_KEY": creds["private_key_pem"],
        "APPLECONNECT_CLIENT_ID": creds["services_id"],
        "APPLECONNECT_APP_IDS": creds["app_id"],
        "APPLECONNECT_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        # Rate limiting stays on (its cost is part of what is measured), with limits that one
        # client IP and one key sending every request do not reach.
        "APPLECONNECT_RATE_LIMIT_PER_IP": "100000000",
        "APPLECONNECT_RATE_LIMIT_PER_KEY": "100000000",
    }
    if database_url:
        env["APPLECONNECT_DATABASE_URL"] = database_url
    return env


def _start_service(
    tmp: Path, port: int, env: dict[str, str], workers: int
) -> subprocess.Popen[bytes]:
    cli = "import sys; from appleconnect.cli import main; sys.argv[0] = 'appleconnect'; main()"
    command = [sys.executable, "-c", cli, "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(tmp / "service")]
    if workers > 1:
        command += ["--workers", str(workers)]
    return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command,
        env=env,
        stdout=(tmp / "service.log").open("w"),
        stderr=subprocess.STDOUT,
    )


@contextmanager
def stack(database_url: str, workers: int) -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="appleconnect-bench-"))
    apple_port, service_port, floor_port = free_port(), free_port(), free_port()
    apple = f"http://127.0.0.1:{apple_port}"
    procs: list[subprocess.Popen[bytes]] = [_start_emulator(tmp, apple_port)]
    try:
        wait_for(apple + "/auth/keys")
        creds = json.loads((tmp / "emulator" / "credentials.json").read_text())
        env = _service_env(creds, apple, service_port, database_url)
        procs.append(_start_service(tmp, service_port, env, workers))
        floor_db = database_url or f"sqlite+aiosqlite:///{tmp / 'floor.sqlite3'}"
        procs.append(
            subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                [sys.executable, str(BENCHMARKS / "floor_app.py"), str(floor_port), floor_db]
            )
        )
        wait_for(f"http://127.0.0.1:{service_port}/healthz")
        wait_for(f"http://127.0.0.1:{floor_port}/json")
        key = (tmp / "service" / "demo-api-key.txt").read_text().strip()
        yield Stack(tmp, apple, service_port, floor_port, *procs, creds["app_id"], key)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


# --- what is sent ------------------------------------------------------------------------------


async def _post_all(apple: str, path: str, bodies: list[dict[str, str]]) -> list[dict[str, object]]:
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(body: dict[str, str]) -> dict[str, object]:
            async with sem:
                response = await client.post(f"{apple}{path}", json=body)
                response.raise_for_status()
                answer: dict[str, object] = response.json()
                return answer

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def new_accounts(s: Stack, n: int, tag: str) -> list[str]:
    emails = [f"bench-{tag}-{i}-{os.urandom(3).hex()}@example.com" for i in range(n)]
    bodies = [
        {"email": e, "first_name": "Bench", "last_name": f"User {i}"} for i, e in enumerate(emails)
    ]
    asyncio.run(_post_all(s.apple, "/emulator/accounts", bodies))
    return emails


def codes_for(s: Stack, emails: list[str]) -> list[str]:
    bodies = [
        {
            "client_id": s.app_id,
            "response_type": "code",
            "state": f"bench-{os.urandom(8).hex()}",
            "account": email,
        }
        for email in emails
    ]
    answers = asyncio.run(_post_all(s.apple, "/emulator/authorize", bodies))
    return [str(a["params"]["code"]) for a in answers]  # type: ignore[index]


def sign_in_requests(s: Stack, codes: list[str]) -> list[bytes]:
    headers = {"X-API-Key": s.key, "Content-Type": "application/x-www-form-urlencoded"}
    return [
        encode("POST", "/api/apple_connect", headers=headers, body=urlencode({"code": c}).encode())
        for c in codes
    ]


def session_requests(path: str, sessions: list[str], n: int) -> list[bytes]:
    return [
        encode("GET", path, headers={"Authorization": f"Bearer {sessions[i % len(sessions)]}"})
        for i in range(n)
    ]


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    concurrency: int
    outcome: Outcome
    service_cpu: float
    emulator_cpu: float
    apple_calls: float | None

    def line(self) -> str:
        n = len(self.outcome.latencies)
        q = statistics.quantiles(self.outcome.latencies, n=100)
        calls = "" if self.apple_calls is None else f"{self.apple_calls:>7.2f}"
        return (
            f"{self.scenario:<26} {self.concurrency:>4} {n / self.outcome.wall:>8.1f} "
            f"{q[49] * 1000:>7.1f} {q[98] * 1000:>7.1f} {q[98] / q[49]:>6.1f} "
            f"{self.service_cpu / n * 1000:>8.2f} {self.emulator_cpu / n * 1000:>8.2f} "
            f"{self.outcome.client_cpu / n * 1000:>7.2f} {calls}"
        ).rstrip()


HEADER = (
    f"{'scenario':<26} {'conc':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'p99/50':>6} "
    f"{'svc CPU':>8} {'emu CPU':>8} {'client':>7} {'Apple'}\n"
    f"{'':<26} {'':>4} {'':>8} {'':>7} {'':>7} {'':>6} "
    f"{'ms/req':>8} {'ms/req':>8} {'ms/req':>7} {'calls'}"
)


def measure(
    s: Stack,
    scenario: str,
    port: int,
    server_pid: int,
    requests: list[bytes],
    concurrency: int,
    count_apple: bool = False,
) -> tuple[Row, Outcome]:
    # Each connection is opened and answered once before the clock starts (benchmarks/_load.py).
    warm = encode("GET", "/json" if port == s.floor_port else "/healthz")
    calls0, cpu0, emu0 = s.apple_calls(), cpu_ns(server_pid), cpu_ns(s.emulator.pid)
    outcome = run(port, requests, concurrency=concurrency, warm=warm)
    time.sleep(0.3)  # the emulator's access log line is written after the answer
    calls = (s.apple_calls() - calls0) / len(requests) if count_apple else None
    row = Row(
        scenario,
        concurrency,
        outcome,
        cpu_between(cpu0, cpu_ns(server_pid)),
        cpu_between(emu0, cpu_ns(s.emulator.pid)),
        calls,
    )
    if outcome.failures:
        raise SystemExit(f"{scenario}: {len(outcome.failures)} failed, e.g. {outcome.failures[0]}")
    return row, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per scenario and level")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--workers", type=int, default=1, help="service processes (default 1)")
    parser.add_argument("--levels", default="1,16,64", help="concurrency levels (default 1,16,64)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    with stack(args.database_url, args.workers) as s:
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
        print(
            f"python {platform.python_version()}; database: {args.database_url or 'SQLite'}; "
            f"service processes: {args.workers}"
        )
        run_all(s, levels, args.requests)
        sizes = ", ".join(f"{m:.1f}" for m in rss_mib(s.service.pid))
        print(f"service resident memory: {sizes} MiB (per process)")


def run_all(s: Stack, levels: list[int], n: int) -> None:
    print(HEADER)
    warm = new_accounts(s, 4, "warm")
    measure(s, "warm-up", s.service_port, s.service.pid, sign_in_requests(s, codes_for(s, warm)), 1)
    returning: list[str] = warm
    for concurrency in levels:
        returning = level(s, concurrency, n, returning)


def level(s: Stack, concurrency: int, n: int, returning: list[str]) -> list[str]:
    # Untimed: as many sign-ins at once as the level has, so that the service holds as many
    # connections to Apple as it will use (the emulator, on uvloop, accepts one new
    # connection per turn of its event loop; Apple's servers are not one process).
    warm = sign_in_requests(s, codes_for(s, new_accounts(s, concurrency, f"w{concurrency}")))
    measure(s, "warm-up", s.service_port, s.service.pid, warm, concurrency)
    fresh = new_accounts(s, n, f"c{concurrency}")
    for label, who in (("sign-in, new user", fresh), ("sign-in, returning user", returning)):
        requests = sign_in_requests(s, codes_for(s, [who[i % len(who)] for i in range(n)]))
        row, _ = measure(
            s, label, s.service_port, s.service.pid, requests, concurrency, count_apple=True
        )
        print(row.line(), flush=True)
    sessions = asyncio.run(_sessions(s, codes_for(s, fresh[: min(len(fresh), 50)])))
    for path in ("/api/validate_auth_cookie", "/api/get_currentuserinfo"):
        requests = session_requests(path, sessions, n * 4)
        row, _ = measure(
            s, path.rsplit("/", 1)[1], s.service_port, s.service.pid, requests, concurrency
        )
        print(row.line(), flush=True)
    floor_pid = s.floor.pid
    for label, raw in (
        ("floor: JSON route", encode("GET", "/json")),
        ("floor: INSERT + COMMIT", encode("POST", "/insert")),
    ):
        row, _ = measure(s, label, s.floor_port, floor_pid, [raw] * (n * 4), concurrency)
        print(row.line(), flush=True)
    return fresh


async def _sessions(s: Stack, codes: list[str]) -> list[str]:
    """Sessions opened with these codes, by sign-ins outside the timed runs."""
    async with httpx.AsyncClient(timeout=60) as client:
        tokens = []
        for code in codes:
            response = await client.post(
                f"http://127.0.0.1:{s.service_port}/api/apple_connect",
                data={"code": code},
                headers={"X-API-Key": s.key},
            )
            response.raise_for_status()
            tokens.append(str(response.json()["cookie"]))
        return tokens


if __name__ == "__main__":
    main()
