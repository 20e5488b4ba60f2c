"""Interactive API documentation: ``GET /docs``, Swagger UI over ``/openapi.json``, offline.

Swagger UI 5 (which renders OpenAPI 3.1, the version of the service's document) comes from
the files the ``fastapi-offline`` package installs: nothing is fetched from a CDN, by the
service or by the browser. The page is ours: it loads the bundle, its stylesheet and a small
start script (``static/apidocs.js``) from ``/docs/assets/``, all from this origin, so its
Content-Security-Policy (:data:`DOCS_POLICY`) allows scripts and styles from here only, none
inline and no ``eval``; Swagger UI's "Try it out" calls this service only.
docs/service.md#api-documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

__all__ = ["ASSETS", "ASSET_PREFIX", "DOCS_POLICY", "DOCS_URL", "router"]

DOCS_URL = "/docs"
ASSET_PREFIX = "/docs/assets/"

DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
"""The page's policy, no wider than Swagger UI needs (the browser test checks that nothing is
refused): its scripts and stylesheet from this origin, no inline script or style and no
``eval``; the stylesheet's icons are ``data:`` images; the document and the "Try it out" calls
are fetched from this origin only; its forms (the "Authorize" dialog) are handled by script and
never submitted."""

ASSET_CACHE = "public, max-age=3600"
"""The assets change only with an upgrade of the package: a browser keeps them an hour."""

_OWN_STATIC = Path(__file__).parent.parent / "static"


@dataclass(frozen=True)
class Asset:
    """A file served at ``/docs/assets/<name>``."""

    source: Traversable
    media_type: str


def _bundle(name: str) -> Traversable:
    """A file of the Swagger UI bundle that ``fastapi-offline`` installs."""
    return files("fastapi_offline") / "static" / name


ASSETS: dict[str, Asset] = {
    "swagger-ui-bundle.js": Asset(_bundle("swagger-ui-bundle.js"), "text/javascript"),
    "swagger-ui.css": Asset(_bundle("swagger-ui.css"), "text/css"),
    "apidocs.js": Asset(_OWN_STATIC / "apidocs.js", "text/javascript"),
}

# Relative URLs: the page works under a path prefix (a proxy's root path) as it is.
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Apple Connect API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<noscript><p>This page needs JavaScript. The OpenAPI document itself is at
<a href="openapi.json">/openapi.json</a>.</p></noscript>
<div id="swagger-ui" data-openapi="openapi.json"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/apidocs.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.get(DOCS_URL)
async def docs_page() -> HTMLResponse:
    """The Swagger UI page."""
    return HTMLResponse(_PAGE, headers={"Content-Security-Policy": DOCS_POLICY})


@cache
def _content(name: str) -> bytes:
    return ASSETS[name].source.read_bytes()


def _asset_route(name: str) -> None:
    media_type = ASSETS[name].media_type

    async def asset() -> Response:
        return Response(
            _content(name),
            media_type=f"{media_type}; charset=utf-8",
            headers={"Cache-Control": ASSET_CACHE},
        )

    router.add_api_route(ASSET_PREFIX + name, asset, methods=["GET"], name=f"docs_{name}")


for _name in ASSETS:
    _asset_route(_name)
