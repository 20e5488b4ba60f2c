"""The emulator's ASGI app: Apple's endpoints on Apple's paths, plus the optional control API.

This module only wires the parts together; the routes live in :mod:`.apple_routes`,
:mod:`.jsapi` and :mod:`.control`, and reach the parts through :mod:`.deps`.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import httpx
from fastapi import FastAPI

from . import apple_routes, control, jsapi
from .faults import FaultInjector, FaultMiddleware
from .notifications import Notifier
from .pages import Pages
from .relay import EmailRelay
from .state import APPLE_ISSUER, EmulatorState

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
"""Where ``appleconnect emulator`` listens by default; pass the real one to ``base_url``."""


def checked_base_url(url: str) -> str:
    """``url`` without its trailing slash, once checked: absolute http(s), no query, no fragment."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"base_url must be an absolute http:// or https:// URL, not {url!r}.")
    return url.rstrip("/")


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    notifier: Notifier = app.state.notifier
    await notifier.aclose()


def create_emulator_app(
    *,
    state_dir: Path | None = None,
    issuer: str = APPLE_ISSUER,
    control_api: bool = True,
    clock: Callable[[], float] | None = None,
    notification_transport: httpx.AsyncBaseTransport | None = None,
    notification_retry_delays: Sequence[float] = (0.5, 2.0, 5.0),
    fault_seed: int | None = None,
    base_url: str = DEFAULT_BASE_URL,
) -> FastAPI:
    """Build the emulator of Apple's side of Sign in with Apple as an ASGI app.

    ``state_dir=None`` keeps everything in memory; otherwise teams, keys, accounts, consents,
    codes and tokens persist in ``state_dir`` and ``credentials.json`` is written there.
    ``clock`` returns Unix seconds (default ``time.time``); the control API can add an offset.
    ``notification_transport`` lets an in-process caller receive server-to-server notifications
    without a socket. ``app.state.emulator`` is the :class:`EmulatorState`, ``app.state.notifier``
    the :class:`Notifier`, ``app.state.faults`` the :class:`FaultInjector` and ``app.state.relay``
    the :class:`EmailRelay` (Private Email Relay; :mod:`.smtp` serves it over SMTP).

    ``base_url`` is where clients reach the emulator, mount prefix included (for example
    ``http://127.0.0.1:8000/apple``): the discovery document's endpoint URLs are built from it,
    never from the request's ``Host`` header, which any client can forge.
    """
    base_url = checked_base_url(base_url)
    state = EmulatorState(state_dir=state_dir, issuer=issuer, clock=clock)
    if state_dir is not None:
        state.write_credentials()
    app = FastAPI(
        title="appleconnect Apple ID emulator",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=_lifespan,
    )
    app.state.emulator = state
    app.state.notifier = Notifier(
        state, transport=notification_transport, retry_delays=notification_retry_delays
    )
    app.state.faults = FaultInjector(seed=fault_seed)
    app.state.pages = Pages()
    app.state.relay = EmailRelay(state)
    app.state.smtp_address = None
    app.state.base_url = base_url
    app.add_middleware(FaultMiddleware, injector=app.state.faults)
    app.router.routes.extend(apple_routes.FORM_ROUTES)
    app.include_router(apple_routes.router)
    app.include_router(jsapi.router)
    if control_api:
        app.include_router(control.router)
    log.info(
        "emulator ready at %s: issuer %s, state %s, control API %s",
        base_url,
        issuer,
        state_dir if state_dir is not None else "in memory",
        "on" if control_api else "off",
    )
    return app
