"""Prometheus metrics at the service's edge: ``GET /metrics`` in the text format.

Everything is measured where the service meets the outside, never inside the sign-in logic:
:class:`MetricsMiddleware` times each request by route and reads the sign-in and notification
outcomes from the answers; :class:`AppleTransport` wraps the HTTP transport to Apple (calls by
endpoint, key-set fetches); a pool listener counts the database connections in use; the
outbox's and the database health's counters (plain attributes) are read at scrape time.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` names an empty directory in their
environment before they start (``appleconnect serve --workers N`` sees to it,
:mod:`appleconnect.workers`): the counters of every process are then summed in each answer, the
pool gauge is the sum over the live processes, and the per-process values read at scrape time
carry a ``pid`` label (docs/service.md#metrics).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import APIRouter
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .apple_network import apple_http_transport
from .container import ServiceContainer
from .deps import ContainerDep
from .errors import ServiceError

__all__ = ["AppleTransport", "MetricsMiddleware", "router", "watch_pool"]

router = APIRouter()

REQUESTS = Histogram(
    "appleconnect_http_request_duration_seconds",
    "Time to answer a request, by route template, method and status.",
    ["route", "method", "status"],
)
SIGNINS = Counter(
    "appleconnect_signins_total",
    "Completed sign-in attempts by path (web, api, refresh) and outcome.",
    ["path", "outcome"],
)
APPLE_CALLS = Counter(
    "appleconnect_apple_calls_total",
    "Calls to Apple by endpoint and outcome.",
    ["endpoint", "outcome"],
)
APPLE_LATENCY = Histogram(
    "appleconnect_apple_call_duration_seconds",
    "Time of a call to Apple, by endpoint.",
    ["endpoint"],
)
KEYSET_FETCHES = Counter(
    "appleconnect_apple_keyset_fetches_total", "Fetches of Apple's key set by outcome.", ["outcome"]
)
NOTIFICATIONS = Counter(
    "appleconnect_notifications_total",
    "Apple's server-to-server notifications by event type and outcome.",
    ["event", "outcome"],
)
RATE_LIMITED = Counter(
    "appleconnect_rate_limit_refusals_total", "Requests refused with 429, by route.", ["route"]
)
POOL_IN_USE = Gauge(
    "appleconnect_db_pool_connections_in_use",
    "Database connections checked out of the pool (with those the session checks keep).",
    multiprocess_mode="livesum",
)

APPLE_ENDPOINTS = frozenset({"token", "revoke", "keys", "usermigrationinfo", "authorize"})
EVENTS = frozenset({"email-disabled", "email-enabled", "consent-revoked", "account-delete"})
WEB_SIGNIN = frozenset({"/auth/apple/callback", "/auth/apple/finish"})
API_SIGNIN = "/api/apple_connect"
NOTIFICATION_ROUTE = "/auth/apple/notifications"
_CAPTURE = 65_536


def _outcome(status: int) -> str:
    if status < 400:
        return "success"
    if status == 503:
        return "unavailable"
    return "refused" if status < 500 else "error"


def _route(scope: Scope) -> str:
    """The template of the route that answered (bounded: ``unmatched`` when none did)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return (path.rstrip("/") or "/") if isinstance(path, str) else "unmatched"


def _has_refresh_token(scope: Scope, body: bytes) -> bool:
    """Whether an ``apple_connect`` request names a refresh token (query, form or JSON)."""
    names = {name for name, _ in parse_qsl(scope.get("query_string", b"").decode("latin-1"))}
    headers = dict(scope.get("headers", ()))
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type == b"application/json":
        try:
            parsed = json.loads(body or b"{}")
        except (ValueError, RecursionError):  # the route answers these; here only the names
            parsed = None
        names |= set(parsed) if isinstance(parsed, dict) else set()
    elif content_type == b"application/x-www-form-urlencoded":
        names |= {name for name, _ in parse_qsl(body.decode("latin-1"))}
    return "refresh_token" in names


class _Exchange:
    """What the middleware keeps of one request and its answer: the bodies only on the routes
    whose outcome is read from them (the API sign-in's request, a notification's answer), the
    cookies and redirect only on the web sign-in."""

    __slots__ = ("location", "request_body", "response_body", "route", "sets_cookie", "status")

    def __init__(self) -> None:
        self.status = 500
        self.route = ""
        self.request_body = b""
        self.response_body = b""
        self.sets_cookie: list[bytes] = []
        self.location = b""

    def started(self, scope: Scope, message: Message) -> None:
        self.status = message["status"]
        self.route = _route(scope)
        if self.route in WEB_SIGNIN:
            headers = message.get("headers", ())
            self.sets_cookie = [v for k, v in headers if k.lower() == b"set-cookie"]
            self.location = next((v for k, v in headers if k.lower() == b"location"), b"")


_TIMERS: dict[tuple[str, str, str], Any] = {}
"""The histogram's labelled children, kept here: ``labels()`` checks and converts its
arguments on every call, and this is done for every request."""


def _observe(route: str, method: str, status: int, seconds: float) -> None:
    key = (route, method, str(status))
    timer = _TIMERS.get(key)
    if timer is None:
        timer = _TIMERS[key] = REQUESTS.labels(*key)
    timer.observe(seconds)


class MetricsMiddleware:
    """Time every request by route and count the sign-ins, notifications and 429s it answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = _Exchange()

        async def tee_receive() -> Message:
            # Called by a handler, after routing: the route is known.
            message = await receive()
            if (
                message["type"] == "http.request"
                and len(seen.request_body) < _CAPTURE
                and _route(scope) == API_SIGNIN
            ):
                seen.request_body += message.get("body", b"")
            return message

        async def tee_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.started(scope, message)
            elif (
                seen.route == NOTIFICATION_ROUTE
                and message["type"] == "http.response.body"
                and len(seen.response_body) < _CAPTURE
            ):
                seen.response_body += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, tee_receive if scope["method"] == "POST" else receive, tee_send)
        finally:
            route = _route(scope)
            _observe(route, scope["method"], seen.status, time.perf_counter() - started)
            _count(scope, route, seen)


def _count(scope: Scope, route: str, seen: _Exchange) -> None:
    if seen.status == 429:
        RATE_LIMITED.labels(route).inc()
    if route in WEB_SIGNIN:
        _count_web(scope, seen)
    elif route == API_SIGNIN and scope["method"] == "POST":
        path = "refresh" if _has_refresh_token(scope, seen.request_body) else "api"
        SIGNINS.labels(path, _outcome(seen.status)).inc()
    elif route == NOTIFICATION_ROUTE:
        event_type = _event(seen.response_body) if seen.status == 200 else "unknown"
        NOTIFICATIONS.labels(event_type, _outcome(seen.status)).inc()


def _event(body: bytes) -> str:
    """The event type of the service's answer to a notification (``other`` if not Apple's)."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return "unknown"
    event_type = parsed.get("event") if isinstance(parsed, dict) else None
    return event_type if event_type in EVENTS else "other"


def _count_web(scope: Scope, seen: _Exchange) -> None:
    """A web sign-in ends with the session cookie set, a redirect saying it was cancelled, or
    an error; other answers (the hand-over page between the callback and the finish) are steps."""
    service: ServiceContainer | None = getattr(scope["app"].state, "container", None)
    cookie = (service.settings.session_cookie if service else "").encode() + b"="
    if any(
        value.startswith(cookie) and not value.startswith(cookie + b";")
        for value in seen.sets_cookie
    ):
        SIGNINS.labels("web", "success").inc()
    elif b"signin=cancelled" in seen.location:
        SIGNINS.labels("web", "cancelled").inc()
    elif seen.status >= 400:
        SIGNINS.labels("web", _outcome(seen.status)).inc()


class AppleTransport(httpx.AsyncBaseTransport):
    """The transport to Apple, counting and timing each call by endpoint and outcome.

    Without ``inner`` (tests and sandbox mode pass the emulator's), the calls go over httpx's
    transport on the service's own asyncio network backend (:mod:`.apple_network`)."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None) -> None:
        self.inner = inner or apple_http_transport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        endpoint = endpoint if endpoint in APPLE_ENDPOINTS else "other"
        started = time.perf_counter()
        outcome = "error"  # anything but an httpx error (a bug, a cancellation) is counted so
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
            raise
        else:
            outcome = "ok" if response.status_code < 400 else str(response.status_code)
            return response
        finally:
            APPLE_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
            APPLE_CALLS.labels(endpoint, outcome).inc()
            if endpoint == "keys":
                KEYSET_FETCHES.labels(outcome).inc()

    async def aclose(self) -> None:
        await self.inner.aclose()


def watch_pool(engine: AsyncEngine) -> None:
    """Keep :data:`POOL_IN_USE` at the connections this engine has checked out."""
    pool = engine.sync_engine.pool
    event.listen(pool, "checkout", lambda *_a: POOL_IN_USE.inc())
    event.listen(pool, "checkin", lambda *_a: POOL_IN_USE.dec())


class _ProcessCollector(Collector):
    """The counters kept as attributes (the outbox worker, the database health), read at scrape
    time; labelled with the process id when several processes share the metrics."""

    def __init__(self, service: ServiceContainer, pid: str | None) -> None:
        self.service = service
        self.pid = pid

    def collect(self) -> Iterable[Any]:
        labels = ["pid"] if self.pid else []
        values = [self.pid] if self.pid else []
        outbox = self.service.outbox
        health = self.service.health
        counters = {
            "appleconnect_outbox_sent": ("Welcome mails sent.", outbox.sent if outbox else 0),
            "appleconnect_outbox_failed_attempts": (
                "Failed delivery attempts.",
                outbox.failed_attempts if outbox else 0,
            ),
            "appleconnect_outbox_gave_up": ("Mails given up on.", outbox.gave_up if outbox else 0),
            "appleconnect_db_outages": ("Times the database went away.", health.outages),
            "appleconnect_db_unavailable_answers": (
                "Requests answered 503 database_unavailable.",
                health.unavailable_answers,
            ),
        }
        for name, (text, value) in counters.items():
            family = CounterMetricFamily(name, text, labels=labels)
            family.add_metric(values, value)
            yield family
        up = GaugeMetricFamily(
            "appleconnect_db_available", "1 when the database answered last time.", labels=labels
        )
        up.add_metric(values, 1.0 if health.available else 0.0)
        yield up


def _allowed(request: Request, service: ServiceContainer) -> bool:
    settings = service.settings
    token = settings.metrics_token.get()
    given = request.headers.get("authorization", "")
    if token and secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.is_loopback:
        return True
    networks = (ipaddress.ip_network(n, strict=False) for n in settings.metrics_allow)
    return any(address in network for network in networks)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, service: ContainerDep) -> Response:
    if not _allowed(request, service):
        raise ServiceError(
            "forbidden",
            "Metrics are open on loopback; elsewhere they need the metrics_token or an address "
            "in metrics_allow.",
            status=403,
        )
    multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    shared = CollectorRegistry() if multiproc else REGISTRY
    if multiproc:
        MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
    own = CollectorRegistry(auto_describe=False)
    own.register(_ProcessCollector(service, str(os.getpid()) if multiproc else None))
    body = generate_latest(shared) + generate_latest(own)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
