"""The plugin as pytest loads it: through the entry point, without importing the emulator until a
fixture is used, with session and function scopes, and under pytest-xdist (one emulator per
worker). Each run is a pytest subprocess on a generated test file."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


def pytest_run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (folder / "pytest.ini").write_text(INI)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_entry_point_names_the_plugin_module() -> None:
    entry = [
        e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "appleconnect"
    ]
    assert [e.value for e in entry] == ["appleconnect.testing.plugin"]


def test_loading_the_plugin_imports_neither_the_emulator_nor_fastapi() -> None:
    code = (
        "import sys, appleconnect.testing.plugin\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'appleconnect.emulator') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_session_fixture_keeps_state_and_function_fixture_resets(tmp_path: Path) -> None:
    (tmp_path / "test_scopes.py").write_text(
        """
import pytest
from appleconnect.testing import EmulatorError

def test_a(apple_emulator_session, apple_emulator):
    assert apple_emulator_session is not apple_emulator
    apple_emulator_session.create_account("kept@example.com")
    apple_emulator.create_account("dropped@example.com")

def test_b(apple_emulator_session, apple_emulator):
    assert apple_emulator_session.account("kept@example.com").email == "kept@example.com"
    with pytest.raises(EmulatorError, match="No Apple ID"):
        apple_emulator.account("dropped@example.com")

async def test_c_async(apple_emulator):
    async with apple_emulator.async_client() as apple:
        signed = apple_emulator.sign_in()
        tokens = await apple.exchange_code(signed.code, redirect_uri=signed.redirect_uri)
    assert tokens.id_token
"""
    )
    result = pytest_run(tmp_path, "test_scopes.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


@pytest.mark.slow
def test_each_xdist_worker_runs_its_own_emulator(tmp_path: Path) -> None:
    (tmp_path / "test_workers.py").write_text(
        """
import os
import re
import pytest

@pytest.mark.parametrize("i", range(20))
def test_port(apple_emulator, i, tmp_path_factory):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    out = tmp_path_factory.getbasetemp().parent.parent / f"seen-{worker}-{i}"
    out.write_text(apple_emulator.base_url)
    assert apple_emulator.sign_in().code
"""
    )
    result = pytest_run(
        tmp_path, "-n", "2", "--basetemp", str(tmp_path / "base"), "test_workers.py"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen: dict[str, set[str]] = {}
    for path in tmp_path.glob("seen-*"):
        worker = path.name.split("-")[1]
        seen.setdefault(worker, set()).add(path.read_text())
    assert sorted(seen) == ["gw0", "gw1"]
    urls = [next(iter(u)) for u in seen.values()]
    assert all(len(u) == 1 for u in seen.values())  # one emulator per worker
    assert urls[0] != urls[1]  # on ports of their own


@pytest.mark.slow
def test_the_plugins_own_tests_pass_with_two_xdist_workers() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "tests/testing/test_plugin.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "CI": "true"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bringing up nodes" in result.stdout  # xdist was active
    assert re.search(r"^\d+ passed", result.stdout, re.M)
    assert "failed" not in result.stdout
