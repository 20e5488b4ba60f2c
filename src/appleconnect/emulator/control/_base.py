"""What every control-API route shares: the route class that turns refusals into answers, the
JSON body reader and the field validators."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from .._errors import ControlError, OAuthError
from .._http import BodyTooLarge, apple_error, read_body
from .._json import JSONInputError, JSONTooDeep, parse_json
from ..faults import FaultError
from ..state import StateError

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024


def json_answer(body: Any, status: int = 200) -> Response:
    """A control-API answer: compact JSON, never cached."""
    return Response(
        content=json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def refusal(exc: ControlError) -> Response:
    """A control-API refusal: ``{"detail": message}`` with the error's status."""
    log.info("control API refused: %s", exc.message)
    return json_answer({"detail": exc.message}, exc.status)


class ControlRoute(APIRoute):
    """A route whose refusals (``ControlError``, ``StateError``, ``FaultError``, and Apple's own
    ``OAuthError`` from the consent step) become 4xx answers instead of server errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except ControlError as exc:
                return refusal(exc)
            except (StateError, FaultError) as exc:
                return refusal(ControlError(str(exc)))
            except OAuthError as exc:
                log.info("control API refused: %s (%s)", exc.error, exc.description)
                return apple_error(exc)

        return guarded


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body), size-limited."""
    try:
        raw = await read_body(request, MAX_JSON_BYTES)
    except BodyTooLarge as exc:
        raise ControlError("The request body is too large.", status=413) from exc
    if not raw.strip():
        return {}
    try:
        data = parse_json(raw, max_bytes=MAX_JSON_BYTES, what="The request body")
    except JSONTooDeep as exc:
        raise ControlError(str(exc)) from exc
    except JSONInputError as exc:
        raise ControlError("The request body is not JSON.") from exc
    if not isinstance(data, dict):
        raise ControlError("The request body must be a JSON object.")
    return data


Body = Annotated[dict[str, Any], Depends(json_body)]


def text(data: dict[str, Any], name: str, *, required: bool = True, limit: int = 2048) -> Any:
    """A string field of at most ``limit`` characters (None when optional and absent)."""
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise ControlError(f"{name} must be a non-empty string of at most {limit} characters.")
    return value


def flag(data: dict[str, Any], name: str, default: bool) -> bool:
    """A boolean field."""
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ControlError(f"{name} must be true or false.")
    return value


def text_list(data: dict[str, Any], name: str) -> list[str]:
    """A list-of-strings field (default empty)."""
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlError(f"{name} must be a list of strings.")
    return value


def number(data: dict[str, Any], name: str, message: str, *, minimum: float | None = None) -> float:
    """A number field (not a boolean), at least ``minimum`` when given; ``message`` otherwise."""
    value = data.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ControlError(message)
    if minimum is not None and value < minimum:
        raise ControlError(message)
    return float(value)


def wants_wait(request: Request, data: dict[str, Any]) -> bool:
    """Whether to deliver notifications before answering (``wait`` in the body or query)."""
    if "wait" in data:
        return flag(data, "wait", False)
    return request.query_params.get("wait", "false").lower() in ("1", "true", "yes")
