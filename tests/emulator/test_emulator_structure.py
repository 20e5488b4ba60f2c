"""The emulator's module structure: no import cycle between its modules (not even one hidden by
an import inside a function), and log lines that never carry a secret."""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import appleconnect.emulator
from appleconnect.emulator import EmulatorState

PACKAGE = Path(appleconnect.emulator.__file__).parent
Authorize = Callable[..., Any]
Exchange = Callable[..., Any]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["appleconnect.emulator", *parts])


def _intra_package_imports() -> dict[str, set[str]]:
    """For every module of the package, the package modules it imports, wherever the import is."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                for candidate in (f"{target}.{alias.name}", target):
                    if candidate in modules and candidate != name:
                        graph[name].add(candidate)
                        break
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in colour and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if node not in colour and (found := visit(node)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_emulator() -> None:
    graph = _intra_package_imports()
    assert "appleconnect.emulator.control.accounts" in graph
    assert "appleconnect.emulator._http" in graph["appleconnect.emulator.apple_routes"]
    assert _cycle(graph) is None


def test_no_package_import_inside_a_function() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and node.level > 0:
                    offenders.append(f"{path.name}:{node.lineno} in {func.name}")
    assert offenders == []


async def test_log_lines_name_the_refusal_and_never_a_secret(
    caplog: pytest.LogCaptureFixture,
    state: EmulatorState,
    authorize: Authorize,
    exchange: Exchange,
    client: httpx.AsyncClient,
) -> None:
    caplog.set_level(logging.DEBUG, logger="appleconnect.emulator")
    result = await authorize()
    code = result["params"]["code"]
    tokens = (await exchange(code=code)).json()
    replay = await exchange(code=code)
    assert replay.json()["error"] == "invalid_grant"
    await client.post("/emulator/keys/rotate", json={})
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("appleconnect"))
    assert "token refused: invalid_grant (The code has already been used.)" in text
    assert "signing key rotated" in text
    secrets = [
        code,
        tokens["access_token"],
        tokens["refresh_token"],
        tokens["id_token"],
        result["params"]["id_token"],
        state.default_team.private_key_pem.splitlines()[1],
        state.settings.hmac_secret,
    ]
    assert [s for s in secrets if s in text] == []
