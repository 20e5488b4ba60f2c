"""The emulator's one JSON reader for input from outside: size- and depth-limited.

Python's ``json`` module recurses once per nesting level, so a small body such as ``[[[[...]]]]``
nested a few thousand levels deep raises ``RecursionError`` instead of ``ValueError``. Every JSON
document the emulator reads from a request (control-API bodies, client-secret headers and
payloads) goes through :func:`parse_json`, which measures the nesting before parsing and raises
:class:`JSONInputError` (a ``ValueError``) for anything it refuses.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted; real documents here need 3 or 4."""

# Strings (with their escapes) are skipped whole, so brackets inside them do not count.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


class JSONInputError(ValueError):
    """Raised when a JSON document is too large, too deep, not UTF-8 or not JSON."""


class JSONTooDeep(JSONInputError):
    """Raised when a JSON document nests arrays and objects deeper than allowed."""


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def parse_json(
    raw: bytes | str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, what: str = "The JSON"
) -> Any:
    """Parse one JSON document from outside; ``what`` starts the error messages."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise JSONInputError(f"{what} is larger than {max_bytes} bytes.")
    if nesting_depth(data) > max_depth:
        raise JSONTooDeep(f"{what} is nested more than {max_depth} levels deep.")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JSONInputError(f"{what} is not valid JSON.") from exc
