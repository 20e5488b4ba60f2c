"""Control API, the emulator itself: overview, credentials, fault injection, the movable clock
and the emulator-wide settings."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import Response

from .._errors import ControlError
from ..deps import BaseUrlDep, FaultsDep, StateDep
from ..faults import parse_fault
from ..state import EmulatorState
from ._base import Body, ControlRoute, json_answer, number
from .directory import client_json

log = logging.getLogger(__name__)

router = APIRouter(prefix="/emulator", route_class=ControlRoute)

MAX_CLOCK_OFFSET = 100 * 365 * 86400
"""The control API keeps the clock within 100 years of the real one."""


def _clock_json(state: EmulatorState) -> Response:
    return json_answer({"now": state.now(), "offset_seconds": state.settings.clock_offset})


@router.get("")
async def overview(state: StateDep) -> Response:
    """Issuer, clock, settings, teams and clients at a glance."""
    return json_answer(
        {
            "issuer": state.issuer,
            "now": state.now(),
            "clock_offset": state.settings.clock_offset,
            "boolean_claims": state.settings.boolean_claims,
            "default_team": state.default_team.team_id,
            "teams": [state.team_json(t) for t in state.list_teams()],
            "clients": [client_json(c) for c in state.list_clients()],
        }
    )


@router.get("/credentials")
async def credentials(state: StateDep, base_url: BaseUrlDep) -> Response:
    """What ``credentials.json`` holds (the default team, with its private key), with the
    ``base_url`` where clients reach the emulator."""
    return json_answer(state.credentials(base_url))


@router.get("/faults")
async def list_faults(faults: FaultsDep) -> Response:
    """Active fault rules."""
    return json_answer([f.as_json() for f in faults.list()])


@router.post("/faults")
async def add_fault(faults: FaultsDep, data: Body) -> Response:
    """Inject a fault (see :mod:`appleconnect.emulator.faults`)."""
    fault = faults.add(parse_fault(data))
    log.info("fault %s injected: %s on %s", fault.id, fault.kind, fault.endpoint)
    return json_answer(fault.as_json(), 201)


@router.delete("/faults")
async def clear_faults(faults: FaultsDep) -> Response:
    """Remove every fault."""
    faults.clear()
    return Response(status_code=204)


@router.delete("/faults/{fault_id}")
async def remove_fault(fault_id: str, faults: FaultsDep) -> Response:
    """Remove one fault."""
    if not faults.remove(fault_id):
        raise ControlError("No such fault.", status=404)
    return Response(status_code=204)


@router.get("/clock")
async def clock(state: StateDep) -> Response:
    """The emulator's time and its offset from the real clock."""
    return _clock_json(state)


@router.put("/clock")
async def set_clock(state: StateDep, data: Body) -> Response:
    """Set the offset: ``{"offset_seconds": 3600}``."""
    offset = number(data, "offset_seconds", "offset_seconds must be a number.")
    if abs(offset) > MAX_CLOCK_OFFSET:
        raise ControlError("offset_seconds must be within 100 years.")
    state.set_clock_offset(offset)
    log.info("clock offset set to %ss", offset)
    return _clock_json(state)


@router.post("/clock/advance")
async def advance_clock(state: StateDep, data: Body) -> Response:
    """Move the clock forward: ``{"seconds": 301}``."""
    seconds = number(data, "seconds", "seconds must be a non-negative number.", minimum=0)
    if state.settings.clock_offset + seconds > MAX_CLOCK_OFFSET:
        raise ControlError("The offset must stay within 100 years.")
    state.set_clock_offset(state.settings.clock_offset + seconds)
    log.info("clock advanced by %ss", seconds)
    return _clock_json(state)


@router.put("/settings")
async def settings(state: StateDep, data: Body) -> Response:
    """How email_verified/is_private_email look: ``{"boolean_claims": "string"|"boolean"}``."""
    if "boolean_claims" in data:
        state.set_boolean_claims(data["boolean_claims"])
    return json_answer({"boolean_claims": state.settings.boolean_claims})
