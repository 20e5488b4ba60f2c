"""The integrations' boundaries (docs/architecture.md): they use the library only, never the
service, the emulator or the test kit, and none of them pulls in another web framework."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import appleconnect.integrations

FORBIDDEN = ("appleconnect.server", "appleconnect.emulator", "appleconnect.testing")
FRAMEWORKS = ("fastapi", "starlette", "flask", "django")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_integrations_import_neither_the_service_nor_the_emulator() -> None:
    package = Path(appleconnect.integrations.__file__).parent
    offenders = [
        f"{path.relative_to(package)}: {module}"
        for path in sorted(package.rglob("*.py"))
        for module in sorted(imported_modules(path))
        if module.startswith(FORBIDDEN)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("appleconnect.integrations", ()),
        ("appleconnect.integrations.fastapi", ("fastapi", "starlette")),
        ("appleconnect.integrations.flask", ("flask",)),
    ],
)
def test_no_integration_pulls_in_another_framework(module: str, allowed: tuple[str, ...]) -> None:
    code = (
        f"import sys, json, {module}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FRAMEWORKS)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == sorted(allowed)


def test_the_django_integration_pulls_in_no_other_framework() -> None:
    code = (
        "import json, sys, django\n"
        "from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['django.contrib.auth', 'django.contrib.contenttypes',"
        " 'appleconnect.integrations.django'])\n"
        "django.setup()\n"
        "import appleconnect.integrations.django.urls, appleconnect.integrations.django.backends\n"
        "import appleconnect.integrations.django.management.commands.apple_delete_user\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FRAMEWORKS)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == ["django"]
