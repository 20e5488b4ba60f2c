"""The service's one reader of JSON from outside: size- and depth-limited, one clear 400.

Python's ``json`` module recurses once per nesting level, so a body of about 2 KB such as
``[[[[...]]]]`` nested a thousand levels deep raises ``RecursionError`` rather than
``ValueError``. Every JSON document the service reads from a request (the REST API's JSON
body, Apple's notification body) goes through :func:`read_json`, which measures the nesting
with a loop (no recursion) before the document is parsed, and raises :class:`.ServiceError`
``invalid_body`` (400) for anything it refuses. docs/service.md#json-bodies.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ServiceError

__all__ = ["MAX_JSON_DEPTH", "check_json_shape", "json_depth", "read_json"]

MAX_JSON_DEPTH = 16
"""Deepest nesting of arrays and objects accepted; the service's documents need 3 at most."""

_OPEN, _CLOSE, _QUOTE, _BACKSLASH = b"[{", b"]}", 0x22, 0x5C


def json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in ``raw``, brackets inside strings not counted.

    Linear in the length and without recursion, so any input is measured safely, valid JSON
    or not.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif byte in _CLOSE:
            depth -= 1
    return deepest


def check_json_shape(raw: bytes, *, max_bytes: int, what: str) -> None:
    """Raise ``invalid_body`` (400, or 413 when too large) unless ``raw`` is small and shallow
    enough to be parsed; ``what`` names the document in the message ("The JSON body")."""
    if len(raw) > max_bytes:
        raise ServiceError(
            "payload_too_large", f"{what} is larger than {max_bytes} bytes.", status=413
        )
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise ServiceError(
            "invalid_body",
            f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.",
            status=400,
        )


def read_json(raw: bytes, *, max_bytes: int, what: str = "The JSON body") -> Any:
    """Parse one JSON document from outside, or raise ``invalid_body`` with a clear message."""
    check_json_shape(raw, max_bytes=max_bytes, what=what)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ServiceError("invalid_body", f"{what} is not valid JSON.", status=400) from None
