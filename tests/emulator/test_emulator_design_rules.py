"""The import boundary (docs/architecture.md#import-boundaries): the emulator imports nothing
from the project except the shared button renderer, so that it stays an independent
implementation of Apple's side."""

from __future__ import annotations

import ast
from pathlib import Path

import appleconnect.emulator

ALLOWED = {"appleconnect.buttons", "appleconnect"}


def test_emulator_imports_only_the_button_renderer() -> None:
    package = Path(appleconnect.emulator.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                module = node.module
                if module == "appleconnect":
                    names = {alias.name for alias in node.names}
                    if names != {"buttons"}:
                        offenders.append(f"{path.name}: from appleconnect import {names}")
                elif module.startswith("appleconnect.") and module not in ALLOWED:
                    offenders.append(f"{path.name}: from {module}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("appleconnect") and alias.name not in ALLOWED:
                        offenders.append(f"{path.name}: import {alias.name}")
    assert offenders == []
