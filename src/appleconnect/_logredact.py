"""Secrets never reach a log line: API keys, session, hand-off and login tokens, codes, JWTs.

The database keeps only hashes of the service's tokens, so a log line that holds one in clear
(an access-log line for ``GET /api/get_currentuserinfo?cookie=acs_…`` is one) would be the
only place an attacker with read access to the logs could take a live credential from.
:func:`redact` rewrites

- the value of every secret-bearing parameter in a query string or form
  (``key=``, ``cookie=``, ``handoff=``, ``token=``, ``code=``, ``id_token=`` … see
  :data:`SECRET_PARAMETERS`),
- ``Authorization: Bearer …`` / ``Basic …`` credentials and ``X-API-Key`` headers,
- the service's own tokens wherever they appear (``ack_``, ``acs_``, ``acl_``, ``ach_``),
- anything shaped like a JWT (``eyJ….….…``: id_tokens, client secrets, notifications),

to ``[redacted]``. :class:`RedactSecrets` is the same as a :class:`logging.Filter` for a log
configuration of one's own; :func:`install_log_redaction` applies it to every record the
process creates, whatever its logger or handler (uvicorn's access and error logs included), and
is what ``appleconnect serve`` and ``appleconnect emulator`` call before they start uvicorn.
docs/service.md#secrets-in-logs.

This module imports only the standard library, so every part of the project may use it.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "SECRET_PARAMETERS",
    "RedactSecrets",
    "install_log_redaction",
    "redact",
    "redact_record",
]

REDACTED = "[redacted]"

SECRET_PARAMETERS = (
    "key",
    "api_key",
    "cookie",
    "handoff",
    "token",
    "code",
    "id_token",
    "access_token",
    "refresh_token",
    "client_secret",
    "client_assertion",
    "password",
    "secret",
    "login_hint",
)
"""Parameter names whose values are redacted (case-insensitive) in ``name=value`` pairs."""

_NAMES = "|".join(sorted(SECRET_PARAMETERS, key=len, reverse=True))
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # name=value in a query string, a form, or a "name=value" log message.
    (re.compile(rf"(?i)(?<![\w-])((?:{_NAMES})=)[^&\s;\"'#<>]+"), rf"\1{REDACTED}"),
    # "name": "value" in JSON.
    (re.compile(rf'(?i)("(?:{_NAMES})"\s*:\s*")[^"]*"'), rf'\1{REDACTED}"'),
    # Credentials in an Authorization or X-API-Key header as it would be printed.
    (re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+"), rf"\1 {REDACTED}"),
    (re.compile(r"(?i)(x-api-key[\"']?\s*[:=,]\s*[\"']?)[^\s\"',)]+"), rf"\1{REDACTED}"),
    # The service's tokens and anything shaped like a JWT, wherever they stand.
    (re.compile(r"\b(ac[skhl]_)[\w-]{8,}"), rf"\1{REDACTED}"),
    (re.compile(r"\beyJ[\w-]*\.[\w-]*\.[\w-]*"), REDACTED),
)


# Matches wherever any rule above could (a superset, one pass): most log lines hold no secret
# and are returned after this one search instead of six.
_MAYBE = re.compile(rf"(?i)(?:{_NAMES})[\"=]|bearer|basic|x-api-key|ac[skhl]_|eyJ")


# The same, for ASCII text lower-cased first: about four times faster than the case-insensitive
# search, and exactly equivalent on ASCII text (every log line but a few).
_MAYBE_LOWER = re.compile(rf"(?:{_NAMES})[\"=]|bearer|basic|x-api-key|ac[skhl]_|eyj")


def _maybe_secret(text: str) -> bool:
    if text.isascii():
        return _MAYBE_LOWER.search(text.lower()) is not None
    return _MAYBE.search(text) is not None


def redact(text: str) -> str:
    """``text`` with every secret this module knows replaced by ``[redacted]``."""
    if not _maybe_secret(text):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact(arg)
    if arg is None or isinstance(arg, int | float):
        return arg  # keeps %d and %f working
    text = str(arg)
    cleaned = redact(text)
    return arg if cleaned == text else cleaned


@functools.lru_cache(maxsize=512)
def _redact_format(msg: str) -> str:
    return redact(msg)


def _texts(args: Iterable[Any]) -> Iterator[str]:
    for arg in args:
        if isinstance(arg, str):
            yield arg
        elif not (arg is None or isinstance(arg, int | float)):
            yield str(arg)


def _clean(args: Iterable[Any]) -> bool:
    """Whether no argument can hold a secret: one search over all of them (the search has no
    anchors or look-arounds, so a secret in one argument is found in the joined text too)."""
    return not _maybe_secret("\n".join(_texts(args)))


def redact_record(record: logging.LogRecord) -> None:
    """Redact the message, its arguments and any traceback of ``record`` in place.

    This runs for every record the process makes, uvicorn's access-log line per request
    included, so the common case is kept short: a message with arguments is a format string
    (redacted once and remembered), and arguments that hold nothing secret-shaped are left as
    they are after one search."""
    if isinstance(record.msg, str):
        record.msg = _redact_format(record.msg) if record.args else redact(record.msg)
    if isinstance(record.args, Mapping):
        if not _clean(record.args.values()):
            record.args = {name: _redact_arg(value) for name, value in record.args.items()}
    elif isinstance(record.args, tuple) and not _clean(record.args):
        record.args = tuple(_redact_arg(arg) for arg in record.args)
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:  # formatters use this cached text rather than the exception
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactSecrets(logging.Filter):
    """A logging filter that redacts secrets (:func:`redact_record`) and lets every record pass.

    For a logging configuration of one's own, for example uvicorn's ``--log-config``::

        "filters": {"redact": {"()": "appleconnect._logredact.RedactSecrets"}},
        "handlers": {"access": {..., "filters": ["redact"]}}
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_Factory = Callable[..., logging.LogRecord]


class _RedactingFactory:
    """A log record factory that redacts each record it makes (:func:`install_log_redaction`)."""

    def __init__(self, inner: _Factory) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        redact_record(record)
        return record


def install_log_redaction() -> None:
    """Redact every log record this process creates from now on, whatever logs it and wherever
    it goes: the record factory is wrapped, so no logging configuration loaded later (uvicorn
    loads its own at start) can bypass it. Calling it again changes nothing."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(factory))
