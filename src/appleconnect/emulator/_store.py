"""Persistence of the emulator's records: one SQLite file, or nothing at all (in-memory mode).

Records are small JSON documents keyed by ``(kind, key)``. The state object keeps every record in
memory and writes through to this store on each change, so reads never touch the disk and a
restart reloads exactly what was written. SQLite gives atomic, crash-safe writes for free (WAL).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
)
"""


_SIDECARS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside the database; it creates them with the database file's mode."""


def private_directory(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by this user only (0700), whatever the
    umask; an existing directory keeps its mode."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def private_file(path: Path) -> None:
    """Make sure ``path`` exists and is 0600 before anyone writes a secret to it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Store:
    """Write-through persistence for the emulator state; a no-op when ``path`` is ``None``."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            private_directory(path.parent)
            private_file(path)
            # check_same_thread=False: FastAPI may call us from its thread pool; the lock below
            # serialises every use of the connection.
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            for sidecar in _SIDECARS:
                sidecar_path = path.with_name(path.name + sidecar)
                if sidecar_path.exists():
                    sidecar_path.chmod(0o600)

    @property
    def persistent(self) -> bool:
        """Whether records survive the process."""
        return self._db is not None

    def load(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield every stored ``(key, record)`` of one kind."""
        if self._db is None:
            return
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value FROM records WHERE kind = ? ORDER BY rowid", (kind,)
            ).fetchall()
        for key, value in rows:
            yield str(key), json.loads(value)

    def put(self, kind: str, key: str, record: dict[str, Any]) -> None:
        """Insert or replace one record."""
        if self._db is None:
            return
        data = json.dumps(record, separators=(",", ":"), sort_keys=True)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)",
                (kind, key, data),
            )

    def delete(self, kind: str, key: str) -> None:
        """Remove one record if it exists."""
        if self._db is None:
            return
        with self._lock:
            self._db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Make the writes inside one transaction: one commit instead of one per write.

        What was written is committed even if the block raises: the in-memory state it mirrors
        has changed already. Nested batches join the outer one.
        """
        db = self._db
        if db is None:
            yield
            return
        with self._lock:
            if db.in_transaction:
                yield
                return
            db.execute("BEGIN")
            try:
                yield
            finally:
                if db.in_transaction:  # SQLite may have rolled back after a failed write
                    db.execute("COMMIT")

    def close(self) -> None:
        """Close the database file."""
        if self._db is not None:
            with self._lock:
                self._db.close()
                self._db = None
