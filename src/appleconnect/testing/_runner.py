"""One emulator app running on its own event loop in a daemon thread.

The thread serves the loopback HTTP server (uvicorn on ``127.0.0.1`` and a free port, started
the first time someone asks for the URL) and the plugin's own housekeeping between tests.
In-process calls from synchronous code run on a private event loop of the calling thread: a hop
to the emulator's thread and back costs as much as the request itself on a busy machine. From a
thread that is already running an event loop (an async test calling a synchronous helper) they
hop to the emulator's thread instead. The emulator's state is thread-safe, so every caller can
use it at the same time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

_T = TypeVar("_T")

CALL_TIMEOUT = 60.0
"""Longest wait for one call on the emulator's thread (a fault may add up to 60 s of latency)."""


def bound_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 and a free port (port 0: the system picks one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def loopback_url(sock: socket.socket) -> str:
    """``http://127.0.0.1:<port>`` of a bound socket."""
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


class EmulatorRunner:
    """Runs ``app`` on a private event loop; ``base_url`` starts a loopback server on demand.

    ``sock`` is bound (not yet listening) to ``127.0.0.1`` and a port the system chose (so
    that xdist workers never clash); the app was built knowing that URL.
    """

    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        self.app = app
        self._sock = sock
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="apple-emulator", daemon=True
        )
        self._thread.start()
        self._asgi = httpx.ASGITransport(app=app)
        self._server: Any = None
        self._serving: concurrent.futures.Future[None] | None = None
        self._base_url: str | None = None
        self._start_lock = threading.Lock()
        self._local = threading.local()
        self._local_loops: list[asyncio.AbstractEventLoop] = []

    def call(self, coroutine: Coroutine[Any, Any, _T], timeout: float = CALL_TIMEOUT) -> _T:
        """Run ``coroutine`` in-process and return its result (or raise its error).

        Background work it starts (a notification sent without ``wait``) is finished before
        this returns, so that nothing is left on a loop that only runs during calls.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loop = self._loop_of_this_thread()
            result = loop.run_until_complete(coroutine)
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            return result
        return self.call_on_thread(coroutine, timeout)

    def call_on_thread(
        self, coroutine: Coroutine[Any, Any, _T], timeout: float = CALL_TIMEOUT
    ) -> _T:
        """Run ``coroutine`` on the emulator's own thread and loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def _loop_of_this_thread(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            with self._start_lock:
                self._local_loops.append(loop)
        return loop

    async def send(self, request: httpx.Request) -> tuple[int, httpx.Headers, bytes]:
        """One request through the app, in-process; runs on the emulator's loop."""
        response = await self._asgi.handle_async_request(request)
        body = await response.aread()
        return response.status_code, response.headers, body

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the emulator over loopback HTTP (started on first use)."""
        with self._start_lock:
            if self._base_url is None:
                self._base_url = self._start_server()
            return self._base_url

    def _start_server(self) -> str:
        import uvicorn

        sock = self._sock
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)

        async def serve() -> None:
            await server.serve(sockets=[sock])

        self._server = server
        self._serving = asyncio.run_coroutine_threadsafe(serve(), self.loop)

        async def started() -> None:
            while not server.started:
                if self._serving is not None and self._serving.done():
                    self._serving.result()
                await asyncio.sleep(0.002)

        self.call_on_thread(started(), timeout=30)
        return loopback_url(sock)

    def close(self) -> None:
        """Stop the loopback server (if started) and the thread."""
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            self._serving.result(timeout=30)
        self._sock.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()
        for loop in self._local_loops:
            loop.close()


class InProcessTransport(httpx.BaseTransport):
    """A synchronous ``httpx`` transport that hands each request to the emulator in-process."""

    def __init__(self, runner: EmulatorRunner) -> None:
        self._runner = runner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=content)
        status, headers, body = self._runner.call(self._runner.send(copy))
        return httpx.Response(status, headers=headers, content=body, request=request)
