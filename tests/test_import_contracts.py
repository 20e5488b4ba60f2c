"""The import boundaries of pyproject.toml ([tool.importlinter], checked by ``lint-imports`` in
.ci/run) name every module of the package, so that a new module cannot escape them unnoticed."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "appleconnect"
# The composition roots wire the parts together and may import all of them.
COMPOSITION_ROOTS = {
    "appleconnect.sandbox",
    "appleconnect.workers",
    "appleconnect.cli",
    "appleconnect.testing",
}


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _top_level_modules() -> set[str]:
    names = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    names |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    return {f"appleconnect.{name}" for name in names}


def test_every_module_is_in_a_contract_or_a_composition_root() -> None:
    named = set(COMPOSITION_ROOTS)
    for contract in _contracts():
        for key in ("source_modules", "forbidden_modules"):
            modules = contract.get(key, [])
            assert isinstance(modules, list)
            named.update(modules)
    assert _top_level_modules() - named == set()
    assert named - _top_level_modules() == set(), "a contract names a module that is gone"


def test_every_private_module_is_closed_to_the_service_and_the_emulator() -> None:
    private = {m for m in _top_level_modules() if m.rsplit(".", 1)[1].startswith("_")}
    by_id = {c["id"]: c for c in _contracts()}
    for contract_id in ("service-library", "emulator"):
        forbidden = by_id[contract_id]["forbidden_modules"]
        assert isinstance(forbidden, list)
        assert private <= set(forbidden), contract_id
    library = by_id["library"]["source_modules"]
    assert isinstance(library, list)
    assert private <= set(library)
