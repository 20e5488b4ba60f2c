"""Control API, what a developer sets up in Apple's portal: teams, their keys, client ids and
return URLs, notification URLs, and the rotation of Apple's own signing key."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from .._errors import ControlError
from ..deps import StateDep
from ..records import AppTransfer, Client
from ..state import DEFAULT_KEY_GRACE
from ._base import Body, ControlRoute, json_answer, number, text, text_list

log = logging.getLogger(__name__)

router = APIRouter(prefix="/emulator", route_class=ControlRoute)


def client_json(client: Client) -> dict[str, Any]:
    """A client id as the control API shows it."""
    return {
        "client_id": client.client_id,
        "team_id": client.team_id,
        "kind": client.kind,
        "redirect_uris": list(client.redirect_uris),
    }


@router.post("/keys/rotate")
async def rotate(state: StateDep, data: Body) -> Response:
    """New signing key; the old one stays in the JWKS for ``grace_seconds`` (default 7 days)."""
    grace = float(DEFAULT_KEY_GRACE)
    if "grace_seconds" in data:
        grace = number(
            data, "grace_seconds", "grace_seconds must be a non-negative number.", minimum=0
        )
    kid = state.rotate_signing_key(grace_seconds=grace)
    log.info("signing key rotated: new kid %s, grace %ss", kid, grace)
    return json_answer({"kid": kid, "jwks": state.jwks()})


@router.get("/teams")
async def teams(state: StateDep) -> Response:
    """Every team with its key ids, client ids and notification URL."""
    return json_answer([state.team_json(t) for t in state.list_teams()])


@router.post("/teams")
async def create_team(state: StateDep, data: Body) -> Response:
    """Create a team: ``{"team_id"?, "app_id"?, "services_id"?, "redirect_uris"?,
    "notification_url"?}``. Answers the new key's PEM once, like Apple's download."""
    created = state.create_team(
        team_id=text(data, "team_id", required=False, limit=20),
        app_id=text(data, "app_id", required=False, limit=255),
        services_id=text(data, "services_id", required=False, limit=255),
        notification_url=text(data, "notification_url", required=False),
    )
    uris = text_list(data, "redirect_uris")
    if uris and created["services_id"] is None:
        raise ControlError("redirect_uris need a services_id.")
    for uri in uris:
        state.register_redirect_uri(created["services_id"], uri)
    log.info("team %s created (key %s)", created["team_id"], created["key_id"])
    return json_answer(created, 201)


@router.post("/teams/{team_id}/keys")
async def create_key(team_id: str, state: StateDep) -> Response:
    """Another Sign in with Apple key for a team: answers ``key_id`` and ``private_key_pem``."""
    created = state.create_client_key(team_id)
    log.info("key %s created for team %s", created["key_id"], team_id)
    return json_answer(created, 201)


@router.put("/teams/{team_id}/notification-url")
async def notification_url(team_id: str, state: StateDep, data: Body) -> Response:
    """Set (``{"url": "..."}``) or clear (``{"url": null}``) the team's notification URL."""
    url = text(data, "url", required=False)
    state.set_notification_url(url, team_id=team_id)
    return json_answer(state.team_json(state.get_team(team_id)))


@router.get("/clients")
async def clients(state: StateDep) -> Response:
    """Every client id with its team, kind and return URLs."""
    return json_answer([client_json(c) for c in state.list_clients()])


@router.post("/clients")
async def create_client(state: StateDep, data: Body) -> Response:
    """Register a client.

    Body: ``{"client_id", "team_id"?, "kind": "web"|"native", "redirect_uris"?}``.
    """
    kind = data.get("kind", "web")
    if kind not in ("web", "native"):
        raise ControlError("kind must be 'web' or 'native'.")
    uris = text_list(data, "redirect_uris")
    client = state.create_client(
        client_id=text(data, "client_id", limit=255),
        team_id=text(data, "team_id", required=False, limit=20) or state.default_team.team_id,
        kind=kind,
        redirect_uris=uris,
    )
    log.info("client %s (%s) registered for team %s", client.client_id, kind, client.team_id)
    return json_answer(client_json(client), 201)


@router.post("/clients/{client_id}/redirect-uris")
async def add_redirect_uri(client_id: str, state: StateDep, data: Body) -> Response:
    """Allow another return URL: ``{"uri": "http://localhost:3000/callback"}``."""
    state.register_redirect_uri(client_id, text(data, "uri"))
    client = state.get_client(client_id)
    assert client is not None
    return json_answer(client_json(client))


def transfer_json(transfer: AppTransfer) -> dict[str, Any]:
    """An app transfer as the control API shows it."""
    return {
        "app_id": transfer.app_id,
        "client_ids": list(transfer.client_ids),
        "from_team": transfer.from_team,
        "to_team": transfer.to_team,
        "at": transfer.at,
        "done": transfer.done,
    }


@router.get("/transfers")
async def transfers(state: StateDep) -> Response:
    """Every app transfer between teams, scheduled or done."""
    return json_answer([transfer_json(t) for t in state.list_app_transfers()])


@router.post("/transfers")
async def transfer_app(state: StateDep, data: Body) -> Response:
    """Move an App ID and its Services IDs to another team, as Apple's app transfer does.

    Body: ``{"app_id", "to_team", "services_ids"?, "at"?}``; ``services_ids`` defaults to every
    Services ID of the sending team, ``at`` (Unix seconds, emulator time) to now.
    """
    services = text_list(data, "services_ids") if "services_ids" in data else None
    at = number(data, "at", "at must be a time in Unix seconds.") if "at" in data else None
    transfer = state.transfer_app(
        app_id=text(data, "app_id", limit=255),
        to_team=text(data, "to_team", limit=20),
        services_ids=services,
        at=at,
    )
    return json_answer(transfer_json(transfer), 201)
