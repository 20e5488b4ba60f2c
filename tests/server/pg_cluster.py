"""A throwaway PostgreSQL cluster that a test owns: its own data directory and port, started,
stopped and restarted by the test, removed at the end. The machine's other clusters and
databases are never touched.

PostgreSQL refuses to run as root; as root the cluster belongs to the ``postgres`` user and its
commands run through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["ThrowawayCluster", "find_bindir"]


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (on PATH, or Debian's versioned one)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # Debian links initdb, not createdb
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayCluster:
    """One PostgreSQL cluster in a fresh temporary directory, on a free loopback port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = _free_port()
        # Not under pytest's tmp_path: as root that directory is closed to the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="appleconnect-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            shutil.chown(self.root, user=self._user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, action: str, *args: str) -> None:
        # The server's output goes to the log file: a pipe it inherited would stay open.
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", *args, action
        )

    def start(self) -> None:
        """Start and wait until the server accepts connections (``pg_ctl -w``)."""
        self._ctl("start")

    def stop(self) -> None:
        """Stop at once, ending every session (``-m fast``), and wait until it is down."""
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        """Stop at once (``-m fast``) and start again; returns once it accepts connections."""
        self._ctl("restart", "-m", "fast")

    def createdb(self, name: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
