"""docs/service.md's native-app quick start, run as written against a real ``appleconnect
serve``: the shell block is taken from the document and run with bash (only the service's URL
is changed, to the port the test chose), and its four answers are the documented ones."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from server_helpers import free_port, wait_for

pytestmark = pytest.mark.slow

DOCS = Path(__file__).parents[2] / "docs" / "service.md"
DOCUMENTED_URL = "SERVICE=http://127.0.0.1:8000"


def quick_start() -> tuple[str, list[str]]:
    """The shell block of the native-app quick start and the documented answers."""
    text = DOCS.read_text()
    section = text[text.index('<a id="native-app-quick-start"></a>') :]
    section = section[: section.index("\n## ")]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, flags=re.DOTALL)
    [script] = [body for kind, body in blocks if kind == "sh"]
    [answers] = [body for kind, body in blocks if kind == ""]
    return script, answers.splitlines()


def test_the_documented_block_is_what_the_test_runs() -> None:
    script, answers = quick_start()
    assert script.splitlines()[0] == DOCUMENTED_URL
    assert script.count("curl ") == 6
    assert len(answers) == 4


def test_the_native_app_quick_start_runs_as_documented(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl is not installed (.ci/run installs it)")
        pytest.skip("the quick start uses curl (apt-get install curl)")
    script, documented = quick_start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("wb") as log:
        # `appleconnect serve` from the folder that will hold appleconnect-data/.
        serve = subprocess.Popen(
            [sys.executable, "-m", "appleconnect.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(url + "/healthz", serve, timeout=60)
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.replace(DOCUMENTED_URL, f"SERVICE={url}")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        serve.terminate()
        serve.wait(30)
    assert run.returncode == 0, run.stderr
    valid, info, logout, refused = (json.loads(line) for line in run.stdout.splitlines())
    assert valid == json.loads(documented[0])
    assert (info["status"], info["user"]["email"]) == ("ok", "maria.ruiz@example.com")
    assert info["user"]["email_verified"] is True
    assert info["user"]["id"] == 1
    shown = documented[1].replace(",…", "").replace('"…"', '"x"')
    assert set(json.loads(shown)["user"]) <= set(info["user"])
    assert logout == json.loads(documented[2])
    assert refused == json.loads(documented[3])
