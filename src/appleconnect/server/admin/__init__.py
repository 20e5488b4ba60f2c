"""The admin panel (``/admin``), the service's buttons and the embedding endpoints.

``create_app`` calls :func:`install` once; everything here hangs off that one call: the admin
router, the button and ``embed.js`` routes, and the middleware that applies settings changed in
the panel in every process (:mod:`.runtime`). ``docs/admin.md`` and ``docs/embedding.md`` describe
what the pages do.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from ..settings import Settings
from .buttons import embed_router
from .routes import AdminRequired, Forbidden, admin_router, page
from .runtime import AppleSettingsHook, Runtime, SettingsMiddleware

__all__ = ["install"]


def install(
    app: FastAPI,
    settings: Settings,
    *,
    apple_transport: httpx.AsyncBaseTransport | None = None,
    on_apple_settings_changed: AppleSettingsHook | None = None,
) -> None:
    """Add the admin panel, the buttons and the embedding endpoints to the service ``app``."""
    runtime = Runtime(
        base=settings,
        apple_transport=apple_transport,
        on_apple_settings_changed=on_apple_settings_changed,
    )
    app.state.admin_runtime = runtime
    app.include_router(admin_router())
    app.include_router(embed_router())
    app.add_middleware(SettingsMiddleware, runtime=runtime)

    async def admin_required(request: Request, _exc: Exception) -> Response:
        if request.method == "GET":
            return page(request, "signed_out.html", {}, status=401)
        return RedirectResponse("/admin/login", status_code=303)

    async def forbidden(request: Request, _exc: Exception) -> Response:
        return page(
            request,
            "message.html",
            {"text": "The form expired or came from another site. Reload the page and retry."},
            status=403,
        )

    app.add_exception_handler(AdminRequired, admin_required)
    app.add_exception_handler(Forbidden, forbidden)
