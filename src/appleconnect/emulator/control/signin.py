"""Control API, the consent step without a browser: ``POST /emulator/authorize``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from .. import protocol
from .._errors import ControlError
from ..deps import StateDep
from ._base import Body, ControlRoute, flag, json_answer, text
from .accounts import account_or_404

router = APIRouter(prefix="/emulator", route_class=ControlRoute)

AUTHORIZE_PARAMETERS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
)


def _authorize_params(data: dict[str, Any]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for name in AUTHORIZE_PARAMETERS:
        value = data.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise ControlError(f"{name} must be a string.")
            params[name] = [value]
    return params


def _given_name(data: dict[str, Any]) -> tuple[str | None, str | None]:
    given = data.get("name")
    if isinstance(given, dict):
        first = text(given, "firstName", required=False, limit=64)
        last = text(given, "lastName", required=False, limit=64)
        return first, last
    if isinstance(given, str):
        first, _, last = given.strip()[:129].partition(" ")
        return first, last
    if given is not None:
        raise ControlError('name must be "First Last" or {"firstName", "lastName"}.')
    return None, None


@router.post("/authorize")
async def authorize(state: StateDep, data: Body) -> Response:
    """``/auth/authorize`` parameters plus ``account``, ``share_email``, ``name``, ``cancel``.

    Answers ``{"redirect_uri", "response_mode", "params"}``: what the browser would have
    delivered. For an App ID without ``redirect_uri`` this is the native SDK's answer
    (``response_mode: "native"``).
    """
    validated = protocol.validate_authorize(state, _authorize_params(data), native=True)
    cancel = flag(data, "cancel", False)
    account = None
    first_name: str | None = None
    last_name: str | None = None
    if not cancel:
        account = account_or_404(state, text(data, "account", limit=254))
        first_name, last_name = _given_name(data)
    result = protocol.authorize(
        state,
        validated,
        account=account,
        share_email=flag(data, "share_email", True),
        first_name=first_name,
        last_name=last_name,
        cancel=cancel,
    )
    return json_answer(
        {
            "redirect_uri": result.redirect_uri,
            "response_mode": result.response_mode,
            "params": result.params,
        }
    )
