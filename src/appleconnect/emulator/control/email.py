"""Control API, Apple's Private Email Relay: the email sources each team registers (as in the
developer portal, with Apple's limits), the mailbox of each Apple ID and the relay log."""

from __future__ import annotations

import html
import logging
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from .._errors import ControlError
from ..deps import StateDep
from ..email_sources import checked_address, checked_domain, source_from_body
from ..relay import DAILY_LIMIT, EmailRelay
from ..state import RELAY_DOMAIN, EmulatorState
from ._base import Body, ControlRoute, json_answer, text
from .accounts import account_or_404

log = logging.getLogger(__name__)

router = APIRouter(prefix="/emulator", route_class=ControlRoute)


async def get_relay(request: Request) -> EmailRelay:
    """The emulator's :class:`EmailRelay` (``app.state.relay``)."""
    return cast(EmailRelay, request.app.state.relay)


RelayDep = Annotated[EmailRelay, Depends(get_relay)]


def _team(state: EmulatorState, data: dict[str, Any]) -> str:
    team_id = text(data, "team_id", required=False, limit=20) or state.default_team.team_id
    return state.get_team(team_id).team_id


@router.get("/relay")
async def relay_info(request: Request) -> Response:
    """Where the relay's SMTP server listens (``null`` when it is not running) and its rules."""
    host, port = getattr(request.app.state, "smtp_address", None) or (None, None)
    return json_answer(
        {
            "smtp_host": host,
            "smtp_port": port,
            "relay_domain": RELAY_DOMAIN,
            "daily_limit": DAILY_LIMIT,
        }
    )


@router.get("/email-sources")
async def list_sources(request: Request, state: StateDep, relay: RelayDep) -> Response:
    """A team's email sources (``?team_id=``, default team otherwise), membership and limit."""
    team_id = _team(state, dict(request.query_params))
    return json_answer(relay.sources.team_json(team_id))


@router.post("/email-sources")
async def add_source(state: StateDep, relay: RelayDep, data: Body) -> Response:
    """Register a source: ``{"team_id"?, "domain", "dkim_selector"?, "dkim_public_key"?}`` or
    ``{"team_id"?, "email"}``; 409 past the membership's limit (32 or 100)."""
    team_id = _team(state, data)
    added = relay.sources.add(source_from_body(team_id, data))
    log.info("email source %s for team %s", "added" if added else "replaced", team_id)
    return json_answer(relay.sources.team_json(team_id), 201 if added else 200)


@router.delete("/email-sources")
async def remove_source(request: Request, state: StateDep, relay: RelayDep, data: Body) -> Response:
    """Remove a source: ``{"team_id"?, "domain"}`` or ``{"team_id"?, "email"}`` (in the body or
    the query string); 404 if it was not registered."""
    data = {**dict(request.query_params), **data}
    team_id = _team(state, data)
    domain = text(data, "domain", required=False, limit=253)
    email = text(data, "email", required=False, limit=254)
    if (domain is None) == (email is None):
        raise ControlError("Give either domain or email.")
    removed = relay.sources.remove(
        team_id,
        domain=checked_domain(domain) if domain is not None else None,
        email=checked_address(email) if email is not None else None,
    )
    if not removed:
        raise ControlError("No such email source.", status=404)
    return Response(status_code=204)


@router.put("/email-sources/membership")
async def set_membership(state: StateDep, relay: RelayDep, data: Body) -> Response:
    """The team's membership, which sets its limit: ``{"team_id"?, "membership":
    "individual"|"organization"}``."""
    team_id = _team(state, data)
    relay.sources.set_membership(team_id, text(data, "membership", limit=20))
    return json_answer(relay.sources.team_json(team_id))


@router.get("/mailbox")
async def mailbox(account: str, state: StateDep, relay: RelayDep) -> Response:
    """The messages the relay delivered to an Apple ID (``?account=`` id or email)."""
    found = account_or_404(state, account[:254])
    return json_answer(relay.mailbox(found.id))


@router.get("/mailbox/page", response_class=HTMLResponse)
async def mailbox_page(account: str, state: StateDep, relay: RelayDep) -> Response:
    """The same mailbox as a plain page."""
    found = account_or_404(state, account[:254])
    rows = "".join(
        "<article><h2>{subject}</h2><p>From {sender} to {to} (via {relay}) at {at}</p>"
        "<pre>{body}</pre></article>".format(
            subject=html.escape(m["subject"] or "(no subject)"),
            sender=html.escape(m["from"] or ""),
            to=html.escape(m["to"] or ""),
            relay=html.escape(m["relay_address"]),
            at=html.escape(f"{m['received_at']:.0f}"),
            body=html.escape(m["body"]),
        )
        for m in reversed(relay.mailbox(found.id))
    )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Mailbox of {html.escape(found.email)}</title></head><body>"
        f"<h1>Mailbox of {html.escape(found.email)} (emulator)</h1>"
        f"{rows or '<p>No messages.</p>'}</body></html>"
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.get("/relay-log")
async def relay_log(relay: RelayDep) -> Response:
    """What the relay did with each message and why, oldest first."""
    return json_answer(relay.log())


@router.delete("/relay-log")
async def clear_relay(relay: RelayDep) -> Response:
    """Forget the relay log, every mailbox and the daily counts (the sources stay)."""
    relay.clear()
    return Response(status_code=204)
