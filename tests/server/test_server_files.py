"""File modes: the data directory 0700 and every file in it 0600, whatever the umask (issue 9,
item 6). Checked after a real sign-in, when the SQLite database, its WAL and shared-memory
files, ``encryption.key`` and the emulator's state all exist."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import open_env

from appleconnect.server.files import private_sqlite


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files are created 0644 and directories 0755."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def service_files(data_dir: Path) -> list[Path]:
    """Every file of the service's data directory (the emulator's subdirectory aside)."""
    return [
        p
        for p in data_dir.rglob("*")
        if p.is_file() and "emulator" not in p.relative_to(data_dir).parts
    ]


@pytest.mark.usefixtures("umask_022")
async def test_data_directory_and_files_are_private_after_a_sign_in(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with open_env(data_dir, {}) as env:
        finish = await env.web_sign_in()
        assert finish.status_code == 303
        names = {p.name for p in service_files(data_dir)}
        # The files this test is about do exist: the database in WAL mode, and the key.
        assert {"appleconnect.db", "appleconnect.db-wal", "appleconnect.db-shm"} <= names
        assert "encryption.key" in names
        for path in service_files(data_dir):
            assert mode(path) == 0o600, path
        assert mode(data_dir) == 0o700
        assert mode(data_dir / "emulator") == 0o700


@pytest.mark.usefixtures("umask_022")
async def test_loose_modes_left_by_an_older_version_are_narrowed_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with open_env(data_dir, {}) as env:
        await env.web_sign_in()
    for path in service_files(data_dir):
        path.chmod(0o644)
    data_dir.chmod(0o755)
    async with open_env(data_dir, {}) as env:
        await env.web_sign_in()
        assert mode(data_dir) == 0o700
        for path in service_files(data_dir):
            assert mode(path) == 0o600, path


@pytest.mark.usefixtures("umask_022")
async def test_a_database_outside_the_data_directory_is_private_too(
    tmp_path: Path, database_url: str
) -> None:
    # Both backends: with PostgreSQL the data directory still holds encryption.key.
    data_dir = tmp_path / "data"
    async with open_env(data_dir, {"database_url": database_url}) as env:
        await env.web_sign_in()
        files = service_files(data_dir)
        assert data_dir / "encryption.key" in files
        if database_url.startswith("sqlite"):
            database = tmp_path / "service.db"
            files += [database, database.with_name("service.db-wal")]
        for path in files:
            assert mode(path) == 0o600, path
        assert mode(data_dir) == 0o700


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
def test_in_memory_databases_need_no_file(url: str, tmp_path: Path) -> None:
    private_sqlite(url)
    assert not list(tmp_path.iterdir())


@pytest.mark.usefixtures("umask_022")
def test_a_new_database_directory_is_created_private(tmp_path: Path) -> None:
    private_sqlite(f"sqlite+aiosqlite:///{tmp_path / 'new' / 'x.db'}")
    assert mode(tmp_path / "new") == 0o700
    assert mode(tmp_path / "new" / "x.db") == 0o600
    assert (tmp_path / "new" / "x.db").stat().st_size == 0
