"""The app factory: ``create_app(settings)`` builds a new FastAPI app with its own lifespan.

It only wires the parts together: the routers (:mod:`.routes`, :mod:`.admin`), the
middlewares (:mod:`.middleware`), the exception handlers (:mod:`.error_handlers`). Routes are
thin: they read and validate parameters, then call the data functions in :mod:`.store` and the
pipeline in :mod:`.signin`; what they need comes from the dependencies in :mod:`.deps`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI

from appleconnect.logformat import RequestIdMiddleware

from . import error_handlers, metrics, openapi, readiness
from .admin.panel import router as admin_router
from .container import close_container, open_container
from .headers import SecurityHeaders
from .live_settings import LiveSettings
from .middleware import BodyLimit, NotConfiguredGate, SettingsMiddleware
from .routes import api, apidocs, buttons, home, notifications, web
from .settings import Settings

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    apple_transport: httpx.AsyncBaseTransport | None = None,
    outbound_transport: httpx.AsyncBaseTransport | None = None,
    migrate_on_start: bool = True,
    on_apple_settings_changed: Callable[[Settings], None] | None = None,
) -> FastAPI:
    """Build the Apple Connect service for ``settings``.

    ``apple_transport`` carries the service's calls to Apple (tests and sandbox mode pass the
    emulator's ASGI transport); ``outbound_transport`` carries POSTs to ``forward_uris``.
    ``on_apple_settings_changed`` is called with the new settings whenever the admin panel's
    Apple settings (redirect URI, client ids, credentials) take effect in this process,
    including the first time the stored ones are applied after start.

    ``settings`` are the ones the process starts with; routes read
    ``ServiceContainer.settings``, which the admin panel replaces with a new object when it
    changes a setting.
    """
    # Apple credentials may be missing: the admin panel can provide them later (NotConfiguredGate).
    settings.validate(apple=False)
    # Calls to Apple are counted and timed at the transport (metrics.AppleTransport).
    apple_transport = metrics.AppleTransport(apple_transport)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await open_container(
            settings,
            apple_transport=apple_transport,
            outbound_transport=outbound_transport,
            migrate_on_start=migrate_on_start,
        )
        app.state.container = service
        metrics.watch_pool(service.engine)
        try:
            yield
        finally:
            await close_container(service)

    app = FastAPI(
        title="Apple Connect",
        version="1",
        summary="Accounts and sessions from Sign in with Apple, for web and native apps.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.live_settings = LiveSettings(
        base=settings,
        apple_transport=apple_transport,
        on_apple_settings_changed=on_apple_settings_changed,
    )
    _add_routes_directly(app, api.router)
    for router in (home.router, web.router, notifications.router):
        app.include_router(router)
    app.include_router(admin_router)
    app.include_router(buttons.router)
    app.include_router(apidocs.router)
    app.include_router(readiness.router)
    app.include_router(metrics.router)
    error_handlers.install(app)
    openapi.install(app)
    # The last added runs first: settings changed in the panel apply before the gate looks at
    # them, and the gate answers before a body is read.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(NotConfiguredGate)
    app.add_middleware(SettingsMiddleware, live=app.state.live_settings)
    # Outermost: every answer, the gate's and the body limit's included, gets its headers.
    app.add_middleware(SecurityHeaders)
    # Outside everything else: times the whole answer and reads its outcome.
    app.add_middleware(metrics.MetricsMiddleware)
    # Outermost: the request id is set before anything logs and returned on every answer.
    app.add_middleware(RequestIdMiddleware)
    return app


def _add_routes_directly(app: FastAPI, router: APIRouter) -> None:
    """Put ``router``'s routes first on the app's own router, rather than include it.

    FastAPI matches the routes of an included router twice per request (once to choose the
    router, once to choose the route), and the REST API's session check is the service's most
    frequent request: about a tenth of its framework CPU went there
    (docs/performance.md#framework-cost-per-request). Routes are tried in order, so the
    documented ones come first and their trailing-slash aliases (not in the document) after
    them. Nothing is lost: the router has no prefix, dependencies or other options of its own,
    and every path is literal, so no route shadows another whatever the order. (The app's
    ``dependency_overrides`` would not reach these routes; the service uses none.)
    """
    routes = sorted(router.routes, key=lambda route: not getattr(route, "include_in_schema", True))
    app.router.routes[0:0] = routes
