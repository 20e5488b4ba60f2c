"""``appleconnect serve --workers 2`` as a real process on PostgreSQL: two workers answer on the
one port, ``/metrics`` sums both, a worker killed with SIGKILL is replaced, SIGTERM to the parent
ends everything with exit code 0; and what it refuses (docs/service.md#several-worker-processes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import free_port

pytestmark = pytest.mark.slow
REQUESTS = 40
SERVE = [sys.executable, "-m", "appleconnect.cli", "serve"]


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def _clean_environ() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("APPLECONNECT_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }


def workers_of(parent: int) -> set[int]:
    """The worker processes of ``parent`` (multiprocessing's resource tracker left out)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if ppid == parent and state != "Z" and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def _wait(condition: object, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def served(tmp_path: Path, pg_url: str) -> Iterator[Served]:
    port = free_port()
    env = {
        **_clean_environ(),
        # Sandbox-mode settings against no in-process emulator: production's HTTPS rules off.
        "APPLECONNECT_MODE": "sandbox",
        "APPLECONNECT_DATABASE_URL": pg_url,
        "APPLECONNECT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "APPLECONNECT_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*SERVE, "--port", str(port), "--data-dir", str(tmp_path / "data"), "--workers", "2"],
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        _wait(lambda: proc.poll() is not None or len(workers_of(proc.pid)) == 2, "2 workers")
        _wait(lambda: proc.poll() is not None or b"2 workers answering" in log.read_bytes(), "up")
        assert proc.poll() is None, log.read_text()
        yield Served(proc, f"http://127.0.0.1:{port}", log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers_of(proc.pid):
            os.kill(pid, signal.SIGKILL)


def _scrape(url: str) -> tuple[str, dict[str, float]]:
    """``/metrics`` on a fresh connection: the pid that answered, the request counts by route."""
    answer = httpx.get(url + "/metrics", timeout=10.0)
    assert answer.status_code == 200, answer.text
    pid = ""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == "appleconnect_db_available":
                pid = sample.labels["pid"]
            if sample.name == "appleconnect_http_request_duration_seconds_count":
                route = sample.labels["route"]
                counts[route] = counts.get(route, 0.0) + sample.value
    assert pid, answer.text
    return pid, counts


def test_two_workers_share_the_port_and_sum_their_metrics(served: Served) -> None:
    workers = workers_of(served.proc.pid)
    assert len(workers) == 2
    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(lambda _n: _scrape(served.url)[0], range(REQUESTS)))
    # Both processes answered (the kernel hands each connection to one of them).
    assert {int(pid) for pid in answered} == workers, answered
    _pid, counts = _scrape(served.url)
    assert counts["/metrics"] == REQUESTS  # every worker's requests, whichever answers

    # A worker killed outright is logged and replaced; the totals keep its counts.
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    _wait(
        lambda: (
            victim not in workers_of(served.proc.pid)
            and len(workers_of(served.proc.pid)) == 2
            and b"is back as pid" in served.log.read_bytes()
        ),
        "a replacement worker",
    )
    replaced = workers_of(served.proc.pid)
    assert victim not in replaced
    assert len(replaced & workers) == 1
    log = served.log.read_text()
    assert f"(pid {victim}) exited unexpectedly (exit code -9); starting another" in log
    _pid, counts = _scrape(served.url)
    assert counts["/metrics"] >= REQUESTS + 1

    # SIGTERM to the parent: the workers finish and the parent exits 0.
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=90) == 0, served.log.read_text()
    assert workers_of(served.proc.pid) == set()
    assert all(not Path(f"/proc/{pid}").exists() for pid in replaced)
    assert "received SIGTERM: stopping the workers" in served.log.read_text()


def test_sandbox_mode_refuses_several_workers(tmp_path: Path) -> None:
    result = subprocess.run(
        [*SERVE, "--port", str(free_port()), "--data-dir", str(tmp_path / "d"), "--workers", "2"],
        capture_output=True,
        text=True,
        env=_clean_environ(),
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.startswith(
        "appleconnect: --workers needs production mode or an external emulator"
    ), result.stderr
    assert not (tmp_path / "d").exists()  # nothing was prepared


def test_workers_that_cannot_start_make_the_parent_exit_1(tmp_path: Path) -> None:
    """The supervisor on its own, with workers whose configuration file is gone: each worker
    fails before listening, and the parent stops and exits 1."""
    script = (
        "import sys; from pathlib import Path; "
        "from appleconnect.workers import WorkerSpec, serve_workers; "
        "spec = WorkerSpec(data_dir=Path(sys.argv[1]), config=Path(sys.argv[2])); "
        "sys.exit(serve_workers(spec, host='127.0.0.1', port=int(sys.argv[3]), count=2))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(tmp_path / "no.toml"), str(free_port())],
        capture_output=True,
        text=True,
        env=_clean_environ(),
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "config: cannot read" in result.stderr
    assert "could not start (exit code 1); see its log above" in result.stderr


def test_workers_setting_is_checked(tmp_path: Path) -> None:
    from appleconnect.server import load_settings
    from appleconnect.server.settings import SettingsError

    settings = load_settings(data_dir=tmp_path, environ={"APPLECONNECT_WORKERS": "0"})
    with pytest.raises(SettingsError, match=r"^workers: must be 1 to 64 processes\.$"):
        settings.validate(apple=False)
    assert load_settings(data_dir=tmp_path, environ={"APPLECONNECT_WORKERS": "4"}).workers == 4


def test_a_port_in_use_is_one_clear_error() -> None:
    import socket

    from appleconnect.server.commands import CommandError
    from appleconnect.workers import bind

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=rf"^port {port} is in use; pass --port$"):
            bind("127.0.0.1", port)
