"""Log lines a person and a log pipeline can use, and the request id in each of them.

Every line names its time (UTC, ISO 8601), level, logger and the id of the request it belongs
to (``-`` outside a request). :func:`log_config` is the ``logging.config.dictConfig`` that
``appleconnect serve`` and ``appleconnect emulator`` give uvicorn: ``text`` writes
``2026-12-01T22:40:01.123Z INFO appleconnect.server.signin [3f9c…] message``, ``json`` one JSON
object per line. :class:`RequestIdMiddleware` (pure ASGI) takes the id from ``X-Request-ID``
when a proxy set a valid one, or makes one, and returns it in ``X-Request-ID`` on every answer.

Secrets are redacted when a record is made (:mod:`appleconnect._logredact`), before any
formatter sees it. This module imports only the standard library.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any, Literal

__all__ = [
    "LOG_FORMATS",
    "REQUEST_ID",
    "JsonFormatter",
    "LogFormat",
    "RequestIdMiddleware",
    "TextFormatter",
    "lean_log_records",
    "log_config",
    "valid_request_id",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

REQUEST_ID: ContextVar[str] = ContextVar("appleconnect_request_id", default="-")
"""The id of the request being handled in this context (``-`` outside a request)."""

HEADER = b"x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def valid_request_id(value: str) -> bool:
    """Whether a proxy's ``X-Request-ID`` may be used as it is: 1 to 128 characters of letters,
    digits and ``._:@/+=-`` (no spaces, quotes or control characters that could forge a log
    line)."""
    return _VALID.fullmatch(value) is not None


_second: tuple[int, str] = (-1, "")
"""The last second formatted, and its text: a busy service logs many lines per second."""


def _timestamp(record: logging.LogRecord) -> str:
    global _second
    whole = int(record.created)
    cached, seconds = _second
    if whole != cached:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, seconds)
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``time level logger [request id] message`` (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record)} {record.levelname} {record.name} "
            f"[{REQUEST_ID.get()}] {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``request_id``, ``message``
    and, with a traceback, ``exception`` (newlines escaped, so still one line)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": REQUEST_ID.get(),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def lean_log_records() -> None:
    """Stop filling in what these formatters never print: the caller's file and line (a walk
    up the stack), the thread and the process (``os.getpid()``, a system call) of each record.

    The switches the logging HOWTO names for this
    (https://docs.python.org/3/howto/logging.html#optimization) are global, so only the
    processes that serve (``appleconnect serve``, its workers, ``appleconnect emulator``) set
    them, where these formatters are the only ones. docs/performance.md#framework-cost-per-request.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def log_config(log_format: LogFormat = "text", level: str = "INFO") -> dict[str, Any]:
    """A ``dictConfig`` sending every logger (uvicorn's included) to stderr in ``log_format``."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            **{
                name: {"handlers": [], "level": level, "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # aiosmtpd (the emulator's relay) logs each SMTP connection's every step at INFO.
            "mail.log": {"handlers": [], "level": "WARNING", "propagate": True},
        },
    }


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestIdMiddleware:
    """Give each HTTP request an id (the proxy's valid ``X-Request-ID`` or a new one), hold it in
    :data:`REQUEST_ID` while the request is handled, and return it in ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name.lower() == HEADER:
                given = value
                break
        text = given.decode("latin-1")
        request_id = text if given and valid_request_id(text) else secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        header = (HEADER, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                message["headers"] = [*(h for h in headers if h[0].lower() != HEADER), header]
            await send(message)

        # Not reset when the app raises: the 500 handler outside every middleware logs the
        # error and answers in this same context, with the same id.
        await self.app(scope, receive, send_with_id)
        REQUEST_ID.reset(token)
