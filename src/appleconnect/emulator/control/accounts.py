"""Control API, test Apple IDs: create, list, remove, and the changes a user makes at Apple
(email forwarding, stopping Sign in with Apple for a team, deleting the account) that send
server-to-server notifications; plus the delivery log."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .._errors import ControlError
from ..deps import NotifierDep, StateDep
from ..notifications import Delivery, EventType, Notifier
from ..records import Account, Consent
from ..state import EmulatorState
from ._base import Body, ControlRoute, json_answer, text, wants_wait

log = logging.getLogger(__name__)

router = APIRouter(prefix="/emulator", route_class=ControlRoute)


def account_or_404(state: EmulatorState, ref: str) -> Account:
    """The Apple ID with this id or email, or a 404 refusal."""
    account = state.find_account(ref)
    if account is None:
        raise ControlError(f"No Apple ID {ref!r}.", status=404)
    return account


def _consents_of(state: EmulatorState, account: Account, team_id: str | None) -> list[Consent]:
    # The Apple ID's consents, or only its consent for ``team_id`` when given.
    return [c for c in state.consents_of(account.id) if team_id is None or c.team_id == team_id]


async def _send(notifier: Notifier, deliveries: list[Delivery], wait: bool) -> Response:
    for delivery in deliveries:
        log.info("notification %s for team %s (%s)", delivery.type, delivery.team_id, delivery.id)
        if wait:
            await notifier.deliver(delivery)
        else:
            notifier.schedule(delivery)
    return json_answer({"notifications": [d.as_json() for d in deliveries]})


@router.get("/accounts")
async def list_accounts(state: StateDep) -> Response:
    """Every test Apple ID: id, email, name, subs, consents."""
    return json_answer([state.account_json(a) for a in state.list_accounts()])


@router.post("/accounts")
async def create_account(state: StateDep, data: Body) -> Response:
    """Create an Apple ID: ``{"email", "first_name", "last_name"}``."""
    account = state.create_account(
        email=text(data, "email", limit=254),
        first_name=text(data, "first_name", required=False, limit=64) or "",
        last_name=text(data, "last_name", required=False, limit=64) or "",
    )
    log.info("Apple ID %s created", account.id)
    return json_answer(state.account_json(account), 201)


@router.get("/accounts/{ref}")
async def get_account(ref: str, state: StateDep) -> Response:
    """One Apple ID, by id or email."""
    return json_answer(state.account_json(account_or_404(state, ref)))


@router.delete("/accounts/{ref}")
async def delete_apple_id(ref: str, state: StateDep) -> Response:
    """Remove an Apple ID from the emulator quietly (no notification)."""
    account = account_or_404(state, ref)
    state.remove_account(account.id)
    log.info("Apple ID %s removed (no notification)", account.id)
    return Response(status_code=204)


@router.post("/accounts/{ref}/email-forwarding")
async def email_forwarding(
    ref: str, request: Request, state: StateDep, notifier: NotifierDep, data: Body
) -> Response:
    """Turn relay forwarding on or off: ``{"enabled": bool, "team_id"?}``.

    Sends ``email-enabled``/``email-disabled`` to every team (or the one given) where this
    Apple ID uses Hide My Email.
    """
    account = account_or_404(state, ref)
    enabled = data.get("enabled")
    if not isinstance(enabled, bool):
        raise ControlError("enabled must be true or false.")
    team_id = text(data, "team_id", required=False, limit=32)
    event: EventType = "email-enabled" if enabled else "email-disabled"
    deliveries = []
    for consent in _consents_of(state, account, team_id):
        state.set_forwarding(account.id, consent.team_id, enabled)
        if consent.share_email:
            continue
        deliveries.append(
            notifier.build(
                team_id=consent.team_id,
                account_id=account.id,
                event_type=event,
                email=state.relay_email_for(account.id, consent.team_id),
            )
        )
    return await _send(notifier, deliveries, wants_wait(request, data))


@router.post("/accounts/{ref}/revoke-consent")
async def revoke_consent(
    ref: str, request: Request, state: StateDep, notifier: NotifierDep, data: Body
) -> Response:
    """Stop using Sign in with Apple with a team's apps: ``{"team_id"?}``; sends
    ``consent-revoked``. Tokens stop working and the next sign-in sends ``user`` again."""
    account = account_or_404(state, ref)
    team_id = text(data, "team_id", required=False, limit=32)
    deliveries = []
    for consent in _consents_of(state, account, team_id):
        state.end_consent(account.id, consent.team_id)
        deliveries.append(
            notifier.build(
                team_id=consent.team_id, account_id=account.id, event_type="consent-revoked"
            )
        )
    return await _send(notifier, deliveries, wants_wait(request, data))


@router.post("/accounts/{ref}/delete-account")
async def delete_account(
    ref: str, request: Request, state: StateDep, notifier: NotifierDep, data: Body
) -> Response:
    """Permanently delete the Apple account; sends ``account-delete`` to every team it used."""
    account = account_or_404(state, ref)
    deliveries = [
        notifier.build(team_id=c.team_id, account_id=account.id, event_type="account-delete")
        for c in state.consents_of(account.id)
    ]
    state.remove_account(account.id)
    return await _send(notifier, deliveries, wants_wait(request, data))


@router.get("/notifications")
async def notification_log(notifier: NotifierDep) -> Response:
    """The delivery log, oldest first: payload JWT, events, status and every attempt."""
    return json_answer([d.as_json() for d in notifier.log()])


@router.delete("/notifications")
async def clear_notifications(notifier: NotifierDep) -> Response:
    """Forget the delivery log."""
    notifier.clear_log()
    return Response(status_code=204)
