"""The OpenAPI document says what the service does: what each operation takes (a GET no body,
each parameter in one place), what it answers (pages where the browser routes answer pages,
415 and 404 where they happen, no 422 that never happens), and 405 names the allowed methods.
.ci/schemathesis.sh checks the same against a running sandbox with generated requests."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from appleconnect.server import create_app, load_settings, store
from appleconnect.server.errors import ServiceError
from appleconnect.server.routes.web import safe_next
from appleconnect.server.settings import Secret

BASE = "http://127.0.0.1:8000"


def _settings(tmp_path: Path, **overrides: object) -> Any:
    return load_settings(
        data_dir=tmp_path,
        environ={},
        overrides={
            "mode": "sandbox",
            "client_id": "com.example.web",
            "app_ids": ("com.example.app",),
            "client_secret": Secret("a-client-secret-made-by-hand"),
            # Nothing here calls Apple.
            "apple_base_url": "http://127.0.0.1:9/apple",
            **overrides,
        },
    )


def _document(tmp_path: Path) -> dict[str, Any]:
    document: dict[str, Any] = create_app(_settings(tmp_path)).openapi()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_get_operations_declare_no_request_body(tmp_path: Path) -> None:
    gets = [(p, op) for p, m, op in _operations(_document(tmp_path)) if m == "get"]
    assert len(gets) == 4
    assert [p for p, op in gets if "requestBody" in op] == []


def test_no_parameter_is_documented_in_two_places(tmp_path: Path) -> None:
    """Sending a parameter twice is refused, so none may be documented twice: not in the query
    and the body, and not as a parameter besides a security scheme (the key, the session)."""
    document = _document(tmp_path)
    schemes = document["components"]["securitySchemes"]
    credentials = {s["name"] for s in schemes.values() if s["type"] == "apiKey"}
    assert credentials == {"X-API-Key", "key", "cookie"}
    for path, method, operation in _operations(document):
        query = {p["name"] for p in operation.get("parameters", [])}
        content = operation.get("requestBody", {}).get("content", {})
        body = {name for media in content.values() for name in media["schema"]["properties"]}
        assert not query & body, (path, method)
        assert not (query | body) & credentials, (path, method)


def test_no_422_is_documented(tmp_path: Path) -> None:
    """A parameter FastAPI refuses is answered 400 (invalid_parameter), never 422."""
    document = _document(tmp_path)
    assert [p for p, _m, op in _operations(document) if "422" in op["responses"]] == []
    assert "HTTPValidationError" not in str(document)


def test_the_browser_routes_document_their_errors_as_pages(tmp_path: Path) -> None:
    paths = _document(tmp_path)["paths"]
    for path, method in (("/auth/apple/start", "get"), ("/auth/apple/callback", "post")):
        responses = paths[path][method]["responses"]
        for status in ("400", "429", "503"):
            assert list(responses[status]["content"]) == ["text/html", "application/json"]
        # The body limit answers before the route, in JSON.
        assert list(responses.get("413", {"content": {"application/json": 0}})["content"]) == [
            "application/json"
        ]
    assert "303" in paths["/auth/apple/start"]["get"]["responses"]
    assert "200" not in paths["/auth/apple/start"]["get"]["responses"]
    callback_ok = paths["/auth/apple/callback"]["post"]["responses"]["200"]
    assert list(callback_ok["content"]) == ["text/html"]


@pytest.fixture
async def app_and_key(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    application = create_app(_settings(tmp_path, rate_limit_per_ip=3))
    async with application.router.lifespan_context(application):
        async with application.state.container.sessions() as db:
            key = await store.create_api_key(db=db, name="tests")
            await db.commit()
        yield application, key


def _client(app: FastAPI, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50_000))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


def _documented(app: FastAPI, path: str, response: httpx.Response) -> list[str]:
    """The media types the document gives for this answer (``[]``: an answer without body)."""
    operation = app.openapi()["paths"][path][response.request.method.lower()]
    return list(operation["responses"][str(response.status_code)].get("content", {}))


async def test_every_answer_is_in_the_document(app_and_key: tuple[FastAPI, str]) -> None:
    app, key = app_and_key
    async with _client(app, "198.51.100.7") as browser:
        answers = [
            ("/auth/apple/start", await browser.get("/auth/apple/start")),
            ("/auth/apple/start", await browser.get("/auth/apple/start?next=//evil.example")),
            ("/auth/apple/callback", await browser.post("/auth/apple/callback", data={})),
            ("/auth/apple/start", await browser.get("/auth/apple/start")),  # over the limit
        ]
    async with _client(app, "198.51.100.8") as app_client:
        answers += [
            (
                "/api/apple_connect",
                await app_client.post(
                    "/api/apple_connect",
                    content=b"code=x",
                    headers={"content-type": "text/plain", "x-api-key": key},
                ),
            ),
            ("/api/logout", await app_client.post("/api/logout", json={"cookie": 5})),
        ]
    seen = [
        (r.status_code, r.headers.get("content-type", "").split(";")[0], _documented(app, p, r))
        for p, r in answers
    ]
    assert [(status, kind) for status, kind, _ in seen] == [
        (303, ""),
        (400, "text/html"),
        (400, "text/html"),
        (429, "text/html"),
        (415, "application/json"),
        (400, "application/json"),
    ]
    for status, kind, documented in seen:
        assert kind in documented or (not kind and not documented), (status, kind, documented)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/apple_request_auth", "GET, POST"),
        ("DELETE", "/api/apple_request_auth/", "GET, POST"),
        ("GET", "/api/logout", "POST"),
        ("POST", "/auth/apple/start", "GET"),
        ("PATCH", "/auth/apple/notifications", "POST"),
    ],
)
async def test_405_names_every_method_of_the_path(
    app_and_key: tuple[FastAPI, str], method: str, path: str, allow: str
) -> None:
    async with _client(app_and_key[0], "198.51.100.9") as client:
        response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    # JSON for the API and Apple's notifications, a page on the browser routes.
    assert "This method is not allowed." in response.text


def _accepted_by_safe_next(value: str) -> bool:
    try:
        safe_next(value)
    except ServiceError:
        return False
    return True


NEXT_SAMPLES = [
    "",
    "/",
    "/account",
    "/a?b=c#d",
    "//evil",
    "/\\evil",
    "/a\\b",
    "a",
    "/\t",
    "x:/",
    "/\n",
]


@functools.cache
def _next_schema() -> dict[str, Any]:
    # Building the document opens nothing in the data directory.
    app = create_app(_settings(Path("never-created")))
    (parameter,) = app.openapi()["paths"]["/auth/apple/start"]["get"]["parameters"]
    schema: dict[str, Any] = parameter["schema"]
    return schema


# No deadline: the first example builds the app and its document (cached), which on a busy
# machine takes longer than hypothesis's 200 ms.
@settings(deadline=None)
@given(st.one_of(st.sampled_from(NEXT_SAMPLES), st.text(max_size=20).map(lambda s: "/" + s)))
def test_the_documented_next_is_what_the_service_accepts(value: str) -> None:
    schema = _next_schema()
    documented = len(value) <= schema["maxLength"] and _matches_ecma(schema["pattern"], value)
    assert documented == _accepted_by_safe_next(value)


def _matches_ecma(pattern: str, value: str) -> bool:
    """A JSON Schema ``pattern`` read as ECMA-262 does: its ``$`` is the end of the string,
    where Python's also matches before a final newline ("/\n" is not documented as valid)."""
    assert pattern.endswith("$")
    return re.search(pattern[:-1] + r"\Z", value) is not None
