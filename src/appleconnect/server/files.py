"""Private files: the service's data directory is 0700 and every file in it 0600, whatever the
umask.

The directory holds the SQLite database (users' emails, names and last claims, encrypted Apple
refresh tokens) with its WAL, shared-memory and journal files, ``encryption.key`` (which decrypts
those tokens) and the sandbox's demo API key. Files are created with their final mode (the mode
given to ``open``, which a umask can only narrow), and an existing file or directory that is open
to the group or others, from an older version or a copy, is narrowed at start. SQLite gives its
``-wal``, ``-shm`` and ``-journal`` files the mode of the database file, so creating the database
file 0600 before SQLite opens it covers them.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "private_dir", "private_file", "private_sqlite"]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

log = logging.getLogger(__name__)


def _narrow(path: Path, allowed: int) -> None:
    """Take away every permission bit outside ``allowed`` (never adds one)."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~allowed:
            path.chmod(current & allowed)
            log.info("narrowed the mode of %s from %o to %o", path, current, current & allowed)
    except OSError as exc:  # not ours to change: say so, the operator decides
        log.warning("could not make %s private (%s)", path, exc)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode 0700, or narrow an existing one to it."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _narrow(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it is missing (never truncating it), or narrow an
    existing one to 0600. Refuses to follow a symbolic link at ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
    os.close(fd)
    _narrow(path, PRIVATE_FILE)
    return path


def private_sqlite(url: str) -> None:
    """Before SQLite opens the database at ``url``: its file 0600 (so its WAL, shared-memory
    and journal files are too), its directory 0700 when this creates it, leftovers narrowed."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.exists():
        private_dir(path.parent)
    private_file(path)
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            _narrow(companion, PRIVATE_FILE)
