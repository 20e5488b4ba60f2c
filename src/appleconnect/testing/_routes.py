"""Where the emulator's server-to-server notifications go during a test.

The emulator POSTs each notification with ``httpx`` through this transport. A test may route an
origin (``http://testserver``) to an application in-process, ASGI or WSGI, so that the app under
test receives Apple's real signed notification without listening on a socket; every other URL
goes over the network as usual (a loopback server started by the test).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx


def _call_wsgi(
    transport: httpx.BaseTransport, request: httpx.Request
) -> tuple[int, httpx.Headers, bytes]:
    response = transport.handle_request(request)
    return response.status_code, response.headers, response.read()


def origin_of(url: httpx.URL) -> str:
    """``scheme://host[:port]`` of ``url``, as routes are keyed."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


class NotificationRoutes(httpx.AsyncBaseTransport):
    """Routes by origin to in-process apps; anything else goes over the network."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, httpx.AsyncBaseTransport | httpx.BaseTransport] = {}
        self._network = httpx.AsyncHTTPTransport()

    def add(self, origin: str, *, asgi_app: Any = None, wsgi_app: Any = None) -> None:
        """Deliver requests for ``origin`` to ``asgi_app`` or ``wsgi_app`` (exactly one)."""
        if (asgi_app is None) == (wsgi_app is None):
            raise ValueError("Give exactly one of asgi_app= and wsgi_app=.")
        transport: httpx.AsyncBaseTransport | httpx.BaseTransport = (
            httpx.ASGITransport(app=asgi_app)
            if asgi_app is not None
            else httpx.WSGITransport(app=wsgi_app)
        )
        with self._lock:
            self._routes[origin] = transport

    def clear(self) -> None:
        """Forget every route (between tests)."""
        with self._lock:
            self._routes.clear()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            target = self._routes.get(origin_of(request.url))
        if target is None:
            return await self._network.handle_async_request(request)
        if isinstance(target, httpx.AsyncBaseTransport):
            return await target.handle_async_request(request)
        # A WSGI app runs in a worker thread: frameworks such as Django refuse to touch their
        # database from a thread that is running an event loop.
        await request.aread()
        status, headers, body = await asyncio.to_thread(_call_wsgi, target, request)
        return httpx.Response(status, headers=headers, content=body)

    async def aclose(self) -> None:
        await self._network.aclose()
