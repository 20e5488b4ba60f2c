"""``/docs``: the Swagger UI page and its assets, served from installed files with their content
types and the service's headers; the bundle is Swagger UI 5 (which renders OpenAPI 3.1).
The page itself in Chromium: tests/browser/test_apidocs_browser.py."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import httpx
from server_helpers import Env

from appleconnect.server import create_app, load_settings
from appleconnect.server.routes.apidocs import ASSETS, DOCS_POLICY

SOURCE = Path(__file__).parents[2] / "src" / "appleconnect" / "server"


def _client(tmp_path: Path) -> httpx.AsyncClient:
    """The service without its lifespan: enough for pages that use no database."""
    app = create_app(load_settings(data_dir=tmp_path, environ={}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc.test")


def test_the_bundle_is_swagger_ui_5_and_the_document_is_openapi_3_1(tmp_path: Path) -> None:
    bundle = (files("fastapi_offline") / "static" / "swagger-ui-bundle.js").read_text()
    versions = set(re.findall(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', bundle))
    assert len(versions) == 1, versions
    [(major, _minor, _patch)] = versions
    assert int(major) >= 5, "Swagger UI before 5 does not render OpenAPI 3.1"
    document = create_app(load_settings(data_dir=tmp_path, environ={})).openapi()
    assert document["openapi"].startswith("3.1")


async def test_the_page_loads_only_files_of_this_origin(tmp_path: Path) -> None:
    async with _client(tmp_path) as http:
        page = await http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == DOCS_POLICY
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-content-type-options"] == "nosniff"
    sources = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert sources == [
        "data:,",
        "docs/assets/swagger-ui.css",
        "openapi.json",
        "docs/assets/swagger-ui-bundle.js",
        "docs/assets/apidocs.js",
    ]
    assert "<script>" not in page.text  # no inline script: the policy would refuse it
    assert "http" not in page.text.lower()


async def test_each_asset_with_its_type_and_caching(tmp_path: Path) -> None:
    expected = {
        "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
        "swagger-ui.css": "text/css; charset=utf-8",
        "apidocs.js": "text/javascript; charset=utf-8",
    }
    assert set(ASSETS) == set(expected)
    async with _client(tmp_path) as http:
        for name, content_type in expected.items():
            answer = await http.get(f"/docs/assets/{name}")
            assert answer.status_code == 200, name
            assert answer.headers["content-type"] == content_type
            assert answer.headers["cache-control"] == "public, max-age=3600"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert "content-security-policy" not in answer.headers
            assert answer.content == ASSETS[name].source.read_bytes()
        own = await http.get("/docs/assets/apidocs.js")
        assert own.content == (SOURCE / "static" / "apidocs.js").read_bytes()
        for missing in ("/docs/assets/redoc.standalone.js", "/docs/assets/../app.py"):
            answer = await http.get(missing, headers={"Accept": "application/json"})
            assert answer.status_code == 404, missing
            assert answer.json()["error"] == "not_found"
        posted = await http.post("/docs")
        assert posted.status_code == 405


async def test_docs_work_in_a_running_service_and_stay_out_of_the_document(env: Env) -> None:
    page = await env.http.get("/docs")
    assert page.status_code == 200
    assert 'id="swagger-ui"' in page.text
    document = (await env.http.get("/openapi.json")).json()
    assert not [p for p in document["paths"] if p.startswith("/docs")]
