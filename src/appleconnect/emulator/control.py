"""The control API (``/emulator/...``): drive the emulator from tests and demos, in JSON.

It is everything Apple does not let you do on demand: consent without a browser, Apple ID
changes that trigger server-to-server notifications, key rotation, more teams and clients,
fault injection and a movable clock. It is off when the emulator is a public server.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from . import protocol
from ._errors import AppleError, ControlError
from .app import BodyTooLarge, apple_error, read_body
from .faults import FaultError, FaultInjector, parse_fault
from .notifications import Delivery, EventType, Notifier
from .state import DEFAULT_KEY_GRACE, Account, Client, Consent, EmulatorState, StateError

MAX_JSON_BYTES = 64 * 1024
MAX_CLOCK_OFFSET = 100 * 365 * 86400
"""The control API keeps the clock within 100 years of the real one."""
Handler = Callable[[Request], Awaitable[Response]]


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        content=json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _fail(exc: ControlError) -> Response:
    return _json({"detail": exc.message}, exc.status)


async def _body(request: Request) -> dict[str, Any]:
    try:
        raw = await read_body(request, MAX_JSON_BYTES)
    except BodyTooLarge as exc:
        raise ControlError("The request body is too large.", status=413) from exc
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ControlError("The request body is not JSON.") from exc
    if not isinstance(data, dict):
        raise ControlError("The request body must be a JSON object.")
    return data


def _str(data: dict[str, Any], name: str, *, required: bool = True, limit: int = 2048) -> Any:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise ControlError(f"{name} must be a non-empty string of at most {limit} characters.")
    return value


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ControlError(f"{name} must be true or false.")
    return value


def _str_list(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlError(f"{name} must be a list of strings.")
    return value


def _wait(request: Request, data: dict[str, Any]) -> bool:
    if "wait" in data:
        return _bool(data, "wait", False)
    return request.query_params.get("wait", "false").lower() in ("1", "true", "yes")


def control_router(state: EmulatorState, notifier: Notifier, faults: FaultInjector) -> APIRouter:
    """The ``/emulator`` routes, bound to one emulator's state."""
    router = APIRouter(prefix="/emulator")

    def account_or_404(ref: str) -> Account:
        account = state.find_account(ref)
        if account is None:
            raise ControlError(f"No Apple ID {ref!r}.", status=404)
        return account

    def consents_of(account: Account, team_id: str | None) -> list[Consent]:
        # The Apple ID's consents, or only its consent for ``team_id`` when given.
        return [c for c in state.consents_of(account.id) if team_id is None or c.team_id == team_id]

    def clock_json() -> Response:
        return _json({"now": state.now(), "offset_seconds": state.settings.clock_offset})

    async def send(deliveries: list[Delivery], wait: bool) -> Response:
        for delivery in deliveries:
            if wait:
                await notifier.deliver(delivery)
            else:
                notifier.schedule(delivery)
        return _json({"notifications": [d.as_json() for d in deliveries]})

    def guarded(handler: Handler) -> Handler:
        async def route(request: Request) -> Response:
            try:
                result: Response = await handler(request)
            except ControlError as exc:
                return _fail(exc)
            except (StateError, FaultError) as exc:
                return _fail(ControlError(str(exc)))
            except AppleError as exc:
                return apple_error(exc)
            return result

        route.__doc__ = handler.__doc__
        route.__name__ = handler.__name__
        return route

    def add(path: str, method: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            router.add_api_route(path, guarded(handler), methods=[method])
            return handler

        return register

    # -- overview ------------------------------------------------------------------------------

    @add("", "GET")
    async def overview(request: Request) -> Response:
        """Issuer, clock, settings, teams and clients at a glance."""
        return _json(
            {
                "issuer": state.issuer,
                "now": state.now(),
                "clock_offset": state.settings.clock_offset,
                "boolean_claims": state.settings.boolean_claims,
                "default_team": state.default_team.team_id,
                "teams": [state.team_json(t) for t in state.list_teams()],
                "clients": [_client_json(c) for c in state.list_clients()],
            }
        )

    @add("/credentials", "GET")
    async def credentials(request: Request) -> Response:
        """What ``credentials.json`` holds (the default team, with its private key)."""
        return _json(state.credentials())

    # -- accounts ------------------------------------------------------------------------------

    @add("/accounts", "GET")
    async def list_accounts(request: Request) -> Response:
        """Every test Apple ID: id, email, name, subs, consents."""
        return _json([state.account_json(a) for a in state.list_accounts()])

    @add("/accounts", "POST")
    async def create_account(request: Request) -> Response:
        """Create an Apple ID: ``{"email", "first_name", "last_name"}``."""
        data = await _body(request)
        account = state.create_account(
            email=_str(data, "email", limit=254),
            first_name=_str(data, "first_name", required=False, limit=64) or "",
            last_name=_str(data, "last_name", required=False, limit=64) or "",
        )
        return _json(state.account_json(account), 201)

    @add("/accounts/{ref}", "GET")
    async def get_account(request: Request) -> Response:
        """One Apple ID, by id or email."""
        return _json(state.account_json(account_or_404(request.path_params["ref"])))

    @add("/accounts/{ref}", "DELETE")
    async def delete_apple_id(request: Request) -> Response:
        """Remove an Apple ID from the emulator quietly (no notification)."""
        account = account_or_404(request.path_params["ref"])
        state.remove_account(account.id)
        return Response(status_code=204)

    @add("/accounts/{ref}/email-forwarding", "POST")
    async def email_forwarding(request: Request) -> Response:
        """Turn relay forwarding on or off: ``{"enabled": bool, "team_id"?}``.

        Sends ``email-enabled``/``email-disabled`` to every team (or the one given) where this
        Apple ID uses Hide My Email.
        """
        account = account_or_404(request.path_params["ref"])
        data = await _body(request)
        enabled = data.get("enabled")
        if not isinstance(enabled, bool):
            raise ControlError("enabled must be true or false.")
        team_id = _str(data, "team_id", required=False, limit=32)
        event: EventType = "email-enabled" if enabled else "email-disabled"
        deliveries = []
        for consent in consents_of(account, team_id):
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
        return await send(deliveries, _wait(request, data))

    @add("/accounts/{ref}/revoke-consent", "POST")
    async def revoke_consent(request: Request) -> Response:
        """Stop using Sign in with Apple with a team's apps: ``{"team_id"?}``; sends
        ``consent-revoked``. Tokens stop working and the next sign-in sends ``user`` again."""
        account = account_or_404(request.path_params["ref"])
        data = await _body(request)
        team_id = _str(data, "team_id", required=False, limit=32)
        deliveries = []
        for consent in consents_of(account, team_id):
            state.end_consent(account.id, consent.team_id)
            deliveries.append(
                notifier.build(
                    team_id=consent.team_id, account_id=account.id, event_type="consent-revoked"
                )
            )
        return await send(deliveries, _wait(request, data))

    @add("/accounts/{ref}/delete-account", "POST")
    async def delete_account(request: Request) -> Response:
        """Permanently delete the Apple account; sends ``account-delete`` to every team it used."""
        account = account_or_404(request.path_params["ref"])
        data = await _body(request)
        deliveries = [
            notifier.build(team_id=c.team_id, account_id=account.id, event_type="account-delete")
            for c in state.consents_of(account.id)
        ]
        state.remove_account(account.id)
        return await send(deliveries, _wait(request, data))

    # -- notifications -------------------------------------------------------------------------

    @add("/notifications", "GET")
    async def notification_log(request: Request) -> Response:
        """The delivery log, oldest first: payload JWT, events, status and every attempt."""
        return _json([d.as_json() for d in notifier.log()])

    @add("/notifications", "DELETE")
    async def clear_notifications(request: Request) -> Response:
        """Forget the delivery log."""
        notifier.clear_log()
        return Response(status_code=204)

    # -- the consent step without a browser ----------------------------------------------------

    @add("/authorize", "POST")
    async def authorize(request: Request) -> Response:
        """``/auth/authorize`` parameters plus ``account``, ``share_email``, ``name``, ``cancel``.

        Answers ``{"redirect_uri", "response_mode", "params"}``: what the browser would have
        delivered. For an App ID without ``redirect_uri`` this is the native SDK's answer
        (``response_mode: "native"``).
        """
        data = await _body(request)
        params: dict[str, list[str]] = {}
        for name in (
            "client_id",
            "redirect_uri",
            "response_type",
            "response_mode",
            "scope",
            "state",
            "nonce",
        ):
            value = data.get(name)
            if value is not None:
                if not isinstance(value, str):
                    raise ControlError(f"{name} must be a string.")
                params[name] = [value]
        validated = protocol.validate_authorize(state, params, native=True)
        cancel = _bool(data, "cancel", False)
        account = None
        first_name: str | None = None
        last_name: str | None = None
        if not cancel:
            account = account_or_404(_str(data, "account", limit=254))
            given = data.get("name")
            if isinstance(given, dict):
                first_name = _str(given, "firstName", required=False, limit=64)
                last_name = _str(given, "lastName", required=False, limit=64)
            elif isinstance(given, str):
                first_name, _, last_name = given.strip()[:129].partition(" ")
            elif given is not None:
                raise ControlError('name must be "First Last" or {"firstName", "lastName"}.')
        result = protocol.authorize(
            state,
            validated,
            account=account,
            share_email=_bool(data, "share_email", True),
            first_name=first_name,
            last_name=last_name,
            cancel=cancel,
        )
        return _json(
            {
                "redirect_uri": result.redirect_uri,
                "response_mode": result.response_mode,
                "params": result.params,
            }
        )

    # -- keys, teams, clients ------------------------------------------------------------------

    @add("/keys/rotate", "POST")
    async def rotate(request: Request) -> Response:
        """New signing key; the old one stays in the JWKS for ``grace_seconds`` (default 7 days)."""
        data = await _body(request)
        grace = data.get("grace_seconds", DEFAULT_KEY_GRACE)
        if not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0:
            raise ControlError("grace_seconds must be a non-negative number.")
        kid = state.rotate_signing_key(grace_seconds=float(grace))
        return _json({"kid": kid, "jwks": state.jwks()})

    @add("/teams", "GET")
    async def teams(request: Request) -> Response:
        """Every team with its key ids, client ids and notification URL."""
        return _json([state.team_json(t) for t in state.list_teams()])

    @add("/teams", "POST")
    async def create_team(request: Request) -> Response:
        """Create a team: ``{"team_id"?, "app_id"?, "services_id"?, "redirect_uris"?,
        "notification_url"?}``. Answers the new key's PEM once, like Apple's download."""
        data = await _body(request)
        created = state.create_team(
            team_id=_str(data, "team_id", required=False, limit=20),
            app_id=_str(data, "app_id", required=False, limit=255),
            services_id=_str(data, "services_id", required=False, limit=255),
            notification_url=_str(data, "notification_url", required=False),
        )
        uris = _str_list(data, "redirect_uris")
        if uris and created["services_id"] is None:
            raise ControlError("redirect_uris need a services_id.")
        for uri in uris:
            state.register_redirect_uri(created["services_id"], uri)
        return _json(created, 201)

    @add("/teams/{team_id}/keys", "POST")
    async def create_key(request: Request) -> Response:
        """Another Sign in with Apple key for a team: answers ``key_id`` and ``private_key_pem``."""
        return _json(state.create_client_key(request.path_params["team_id"]), 201)

    @add("/teams/{team_id}/notification-url", "PUT")
    async def notification_url(request: Request) -> Response:
        """Set (``{"url": "..."}``) or clear (``{"url": null}``) the team's notification URL."""
        data = await _body(request)
        url = _str(data, "url", required=False)
        state.set_notification_url(url, team_id=request.path_params["team_id"])
        return _json(state.team_json(state.get_team(request.path_params["team_id"])))

    @add("/clients", "GET")
    async def clients(request: Request) -> Response:
        """Every client id with its team, kind and return URLs."""
        return _json([_client_json(c) for c in state.list_clients()])

    @add("/clients", "POST")
    async def create_client(request: Request) -> Response:
        """Register a client.

        Body: ``{"client_id", "team_id"?, "kind": "web"|"native", "redirect_uris"?}``.
        """
        data = await _body(request)
        kind = data.get("kind", "web")
        if kind not in ("web", "native"):
            raise ControlError("kind must be 'web' or 'native'.")
        uris = _str_list(data, "redirect_uris")
        client = state.create_client(
            client_id=_str(data, "client_id", limit=255),
            team_id=_str(data, "team_id", required=False, limit=20) or state.default_team.team_id,
            kind=kind,
            redirect_uris=uris,
        )
        return _json(_client_json(client), 201)

    @add("/clients/{client_id}/redirect-uris", "POST")
    async def add_redirect_uri(request: Request) -> Response:
        """Allow another return URL: ``{"uri": "http://localhost:3000/callback"}``."""
        data = await _body(request)
        client_id = request.path_params["client_id"]
        state.register_redirect_uri(client_id, _str(data, "uri"))
        client = state.get_client(client_id)
        assert client is not None
        return _json(_client_json(client))

    # -- faults, clock, settings ---------------------------------------------------------------

    @add("/faults", "GET")
    async def list_faults(request: Request) -> Response:
        """Active fault rules."""
        return _json([f.as_json() for f in faults.list()])

    @add("/faults", "POST")
    async def add_fault(request: Request) -> Response:
        """Inject a fault (see :mod:`appleconnect.emulator.faults`)."""
        fault = faults.add(parse_fault(await _body(request)))
        return _json(fault.as_json(), 201)

    @add("/faults", "DELETE")
    async def clear_faults(request: Request) -> Response:
        """Remove every fault."""
        faults.clear()
        return Response(status_code=204)

    @add("/faults/{fault_id}", "DELETE")
    async def remove_fault(request: Request) -> Response:
        """Remove one fault."""
        if not faults.remove(request.path_params["fault_id"]):
            raise ControlError("No such fault.", status=404)
        return Response(status_code=204)

    @add("/clock", "GET")
    async def clock(request: Request) -> Response:
        """The emulator's time and its offset from the real clock."""
        return clock_json()

    @add("/clock", "PUT")
    async def set_clock(request: Request) -> Response:
        """Set the offset: ``{"offset_seconds": 3600}``."""
        data = await _body(request)
        offset = data.get("offset_seconds")
        if not isinstance(offset, int | float) or isinstance(offset, bool):
            raise ControlError("offset_seconds must be a number.")
        if abs(offset) > MAX_CLOCK_OFFSET:
            raise ControlError("offset_seconds must be within 100 years.")
        state.set_clock_offset(float(offset))
        return clock_json()

    @add("/clock/advance", "POST")
    async def advance_clock(request: Request) -> Response:
        """Move the clock forward: ``{"seconds": 301}``."""
        data = await _body(request)
        seconds = data.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ControlError("seconds must be a non-negative number.")
        if state.settings.clock_offset + seconds > MAX_CLOCK_OFFSET:
            raise ControlError("The offset must stay within 100 years.")
        state.set_clock_offset(state.settings.clock_offset + float(seconds))
        return clock_json()

    @add("/settings", "PUT")
    async def settings(request: Request) -> Response:
        """How email_verified/is_private_email look: ``{"boolean_claims": "string"|"boolean"}``."""
        data = await _body(request)
        if "boolean_claims" in data:
            state.set_boolean_claims(data["boolean_claims"])
        return _json({"boolean_claims": state.settings.boolean_claims})

    return router


def _client_json(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "team_id": client.team_id,
        "kind": client.kind,
        "redirect_uris": list(client.redirect_uris),
    }
