""".ci/function_length.py: no function in src longer than 80 lines (the rule ruff's statement
count only approximates)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "function_length", ROOT / ".ci" / "function_length.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_src_has_no_function_over_the_limit() -> None:
    assert _script().main([str(ROOT / "src")]) == 0


def test_a_long_function_is_reported_with_its_length(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    source = tmp_path / "long.py"
    source.write_text(f"def short():\n    return 1\n\n\nasync def long():\n{body}\n")
    script = _script()
    found = list(script.long_functions(source, 80))
    assert found == [(5, "long", 82)]
    assert script.main(["--max", "82", str(source)]) == 0
    assert script.main(["--max", "81", str(tmp_path)]) == 1
