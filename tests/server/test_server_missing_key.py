"""A REST call without an API key: 401 ``missing_parameter`` with ``"field": "key"``, on every
operation that takes the key, and the code, the OpenAPI document and docs/service.md agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from server_helpers import Env

from appleconnect.server import create_app, load_settings

DOCS = Path(__file__).parents[2] / "docs" / "service.md"
KEY_SCHEMES = {"apiKeyHeader", "apiKeyParameter"}


def _document(tmp_path: Path) -> dict[str, Any]:
    return create_app(load_settings(data_dir=tmp_path, environ={})).openapi()


def _key_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(path, method, operation)`` of every operation whose security names the API key."""
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            schemes = {name for rule in operation.get("security", []) for name in rule}
            if schemes & KEY_SCHEMES:
                found.append((path, method, operation))
    return found


def test_the_document_answers_a_missing_key_with_401(tmp_path: Path) -> None:
    operations = _key_operations(_document(tmp_path))
    assert {(path, method) for path, method, _ in operations} >= {
        ("/api/apple_request_auth", "get"),
        ("/api/apple_request_auth", "post"),
        ("/api/apple_connect", "post"),
    }
    for path, method, operation in operations:
        answer = operation["responses"]["401"]
        assert "missing" in answer["description"], (path, method)
        assert "key" in answer["description"], (path, method)


def test_the_docs_say_401_for_a_missing_key() -> None:
    text = " ".join(DOCS.read_text().split())
    match = re.search(r"`missing_parameter` \(([^)]*)\)", text)
    assert match is not None
    assert match.group(1).startswith("400; 401 when the missing one is the API key")
    assert '"field": "key"' in match.group(1)


async def test_every_key_operation_answers_401_without_a_key(env: Env, tmp_path: Path) -> None:
    for path, method, _ in _key_operations(_document(tmp_path / "doc")):
        answer = await env.http.request(method.upper(), path)
        assert answer.status_code == 401, (path, method, answer.text)
        assert answer.json() == {
            "status": "error",
            "error": "missing_parameter",
            "message": "Give the API key in the X-API-Key header or the 'key' parameter.",
            "field": "key",
        }
    # An empty key is a missing one; a wrong key is invalid_key, also 401.
    empty = await env.http.post("/api/apple_connect", data={"key": "", "code": "abc"})
    assert (empty.status_code, empty.json()["error"]) == (401, "missing_parameter")
    wrong = await env.http.post("/api/apple_connect", headers={"X-API-Key": "ack_nope"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_key")
