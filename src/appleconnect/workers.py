"""``appleconnect serve --workers N``: N service processes answering on one port.

The parent does the start-up work once (``serve`` has migrated the database, printed the banner
and the admin login link before calling :func:`serve_workers`), binds the listening socket
itself, and starts N worker processes. Each worker is a fresh interpreter (multiprocessing's
``spawn``) that builds the service's app from the same settings (:func:`service_app`) and runs
uvicorn on the inherited socket; the kernel spreads the connections over them.

The parent then only supervises:

- a worker that dies unexpectedly (a crash, ``kill -9``) is logged and replaced; if its
  replacement cannot start either, everything stops and the parent exits 1;
- if the workers cannot start at all (a setting the workers reject, a database gone), the
  parent stops the others and exits 1;
- SIGTERM or SIGINT to the parent is passed to every worker as SIGTERM: each finishes its
  requests in flight and its background work (uvicorn's graceful shutdown), and the parent
  exits 0 once all have ended. Workers run in their own process group, so Ctrl-C in a terminal
  reaches the parent only, which tells each worker once; a worker whose parent disappears
  shuts itself down.

Metrics: before the first worker starts, the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh private directory (or empties the one the operator gave), so that every worker's
counters are summed in each ``/metrics`` answer (:mod:`appleconnect.server.metrics`). A dead
worker's live gauges are dropped with ``mark_process_dead``; its counters stay in the totals.
docs/service.md#several-worker-processes.
"""

from __future__ import annotations

import errno
import logging
import logging.config
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from appleconnect._logredact import install_log_redaction
from appleconnect._serving import GracefulServer, ServerLimits
from appleconnect.logformat import lean_log_records, log_config
from appleconnect.server.commands import CommandError

__all__ = ["MULTIPROC_ENV", "WorkerSpec", "serve_workers", "service_app"]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
START_TIMEOUT = 120.0
"""Seconds a worker has to import, open the database and listen."""
STOP_TIMEOUT = 60.0
"""Seconds the workers have to finish their requests once told to stop; then they are killed."""
EXIT_WAIT = 15.0
"""Seconds a worker that failed to start has to exit before it is killed."""
_POLL = 0.2


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the same service as the parent (it is pickled to it)."""

    data_dir: Path
    config: Path | None
    limits: ServerLimits = field(default_factory=ServerLimits)


def service_app(spec: WorkerSpec) -> Any:
    """The service's ASGI app from the settings ``serve`` reads (file and environment); the
    parent has migrated the database already."""
    from appleconnect.server import create_app, load_settings

    settings = load_settings(data_dir=spec.data_dir, config=spec.config, environ=os.environ)
    return create_app(settings, migrate_on_start=False)


def serve_workers(spec: WorkerSpec, *, host: str, port: int, count: int) -> int:
    """Run ``count`` workers on ``host:port`` until SIGTERM/SIGINT; the exit code (0 after a
    requested stop, 1 when the workers could not start or keep running)."""
    sock = bind(host, port)
    install_log_redaction()
    logging.config.dictConfig(log_config(spec.limits.log_format))
    metrics_dir, made = _metrics_dir()
    try:
        return _Supervisor(spec, sock, count, metrics_dir).run()
    finally:
        sock.close()
        if made:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker inherits."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(f"port {port} is in use; pass --port") from exc
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _metrics_dir() -> tuple[Path, bool]:
    """The directory of the workers' metrics, empty; whether it was made here (then removed at
    the end). The variable is set before any worker imports prometheus_client."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="appleconnect-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


@dataclass
class _Worker:
    slot: int
    process: Any
    ready: Connection
    pid: int = 0


class _Supervisor:
    """Starts the workers, replaces the ones that die, and stops them all on a signal."""

    def __init__(self, spec: WorkerSpec, sock: socket.socket, count: int, metrics: Path) -> None:
        self.spec = spec
        self.sock = sock
        self.count = count
        self.metrics = metrics
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, _Worker] = {}
        self.stop_signal: int | None = None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_signal is None:
            log.info("received %s: stopping the workers", signal.Signals(signum).name)
        self.stop_signal = signum

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            started = [self._start(slot) for slot in range(self.count)]
            if not all(self._wait_ready(worker) for worker in started):
                return 0 if self.stop_signal is not None else 1
            log.info(
                "%d workers answering on the one port: pids %s",
                self.count,
                ", ".join(str(w.pid) for w in started),
            )
            return self._supervise()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, slot: int) -> _Worker:
        ours, theirs = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main,
            args=(self.spec, self.sock, theirs),
            name=f"appleconnect-worker-{slot}",
        )
        process.start()
        theirs.close()
        worker = _Worker(slot=slot, process=process, ready=ours, pid=process.pid or 0)
        self.workers[slot] = worker
        return worker

    def _wait_ready(self, worker: _Worker) -> bool:
        """Whether the worker listens; False (logged) when it exits first or takes too long."""
        deadline = time.monotonic() + START_TIMEOUT
        while self.stop_signal is None and time.monotonic() < deadline:
            if worker.ready.poll(_POLL):
                try:
                    worker.ready.recv()
                except EOFError:  # it exited without saying it was ready
                    break
                return True
            if not worker.process.is_alive():
                break
        if self.stop_signal is None:
            worker.process.join(EXIT_WAIT)  # its exit code, once it has finished exiting
            if worker.process.is_alive():  # it hung after giving up, or took too long to start
                worker.process.kill()
                worker.process.join()
            log.error(
                "worker %d (pid %d) could not start (exit code %s); see its log above",
                worker.slot,
                worker.pid,
                worker.process.exitcode,
            )
        return False

    def _supervise(self) -> int:
        """Replace the workers that die until a signal asks to stop; 1 if a replacement
        cannot start."""
        while self.stop_signal is None:
            sentinels = {w.process.sentinel: w for w in self.workers.values()}
            for ended in wait(list(sentinels), timeout=_POLL):
                worker = sentinels[ended]
                if self.stop_signal is not None:
                    break
                worker.process.join()
                log.warning(
                    "worker %d (pid %d) exited unexpectedly (exit code %s); starting another",
                    worker.slot,
                    worker.pid,
                    worker.process.exitcode,
                )
                self._forget(worker)
                replacement = self._start(worker.slot)
                if not self._wait_ready(replacement):
                    return 0 if self.stop_signal is not None else 1
                log.info("worker %d is back as pid %d", worker.slot, replacement.pid)
        return 0

    def _forget(self, worker: _Worker) -> None:
        from prometheus_client import multiprocess

        worker.ready.close()
        multiprocess.mark_process_dead(worker.pid, str(self.metrics))  # type: ignore[no-untyped-call]

    def _stop_all(self) -> None:
        """SIGTERM to every worker, then wait for them (killing the ones that take too long)."""
        workers = list(self.workers.values())
        for worker in workers:
            if worker.process.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.error(
                    "worker %d (pid %d) did not stop in time: killed", worker.slot, worker.pid
                )
                worker.process.kill()
                worker.process.join()
            self._forget(worker)
        self.workers.clear()


# --- in the worker process ------------------------------------------------------------------


def _worker_main(spec: WorkerSpec, sock: socket.socket, ready: Connection) -> None:
    """A worker: the service on the inherited socket until SIGTERM (or its parent is gone)."""
    os.setpgid(0, 0)  # Ctrl-C in a terminal reaches the parent, which tells each worker once
    _stop_with_parent(os.getppid())
    install_log_redaction()
    lean_log_records()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Before uvicorn listens, a stop ends the worker at once; uvicorn raises the signal it
        # stopped on again once done, which then ends the process with exit code 0 too.
        signal.signal(sig, _exit_quietly)
    options = spec.limits.uvicorn_options()
    config = uvicorn.Config(service_app(spec), log_level="info", proxy_headers=True, **options)
    try:
        # Server.run: on uvicorn's event loop (uvloop when installed), as `serve` runs.
        _ReportingServer(config, ready).run(sockets=[sock])
    except SystemExit as exc:  # a stop (0) or uvicorn's start-up failure (3)
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    # uvicorn has closed the connections and the app its database: skip the interpreter's
    # teardown of a large heap, which takes seconds on a busy machine.
    logging.shutdown()
    os._exit(code)


def _exit_quietly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


class _ReportingServer(GracefulServer):
    """uvicorn's server that tells the parent, once listening, that the worker is ready."""

    def __init__(self, config: uvicorn.Config, ready: Connection) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self.ready.send(os.getpid())


def _stop_with_parent(parent: int) -> None:
    """Shut this worker down gracefully if its parent dies (it cannot pass a signal on then)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
