"""The REST API for apps: authorization URLs, sign-in with a code, and the session calls.

Each route answers on its path with and without a trailing slash and takes its parameters as a
query string, a form or a JSON body (:func:`..params.read_params`), so they are described in
the OpenAPI document by :func:`..openapi.api_operation` rather than by the signatures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from appleconnect import InvalidAuthorizationResponse, parse_authorization_response

from .. import store
from ..container import ServiceContainer
from ..deps import ApiParams, ContainerDep, CurrentSession, CurrentUser
from ..errors import invalid, state_error
from ..openapi import API_KEY_SECURITY, SESSION_SECURITY, api_operation, api_paths
from ..params import required
from ..settings import Settings
from ..signin import (
    SignInResult,
    check_state,
    claim_request,
    delete_account,
    sign_in_with_code,
    sign_in_with_refresh_token,
    unverified_claims,
    verify_hint,
)
from ..users import user_json

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter()


_API_ERRORS = ("400", "401", "413", "415", "429", "503")
"""What every operation may answer besides 200; apple_connect adds 502, delete_account 404."""


def _add(
    path: str,
    methods: list[str],
    endpoint: Callable[..., Awaitable[Response]],
    summary: str,
    params: Mapping[str, str],
    errors: tuple[str, ...],
    security: tuple[str, ...],
) -> None:
    """Route ``endpoint`` on ``path`` and ``path/`` for each method, described in the schema
    (``security``: how its credential may be sent, :data:`..openapi.SECURITY_SCHEMES`)."""
    for p, method, op_id, in_schema in api_paths(path, methods):
        router.add_api_route(
            p,
            endpoint,
            methods=[method],
            operation_id=op_id,
            include_in_schema=in_schema,
            summary=summary,
            openapi_extra=api_operation(
                params,
                name=path.rsplit("/", 1)[-1],
                method=method,
                errors=errors,
                security=security,
            ),
        )


# --- with the API key ----------------------------------------------------------------------


async def apple_request_auth(service: ContainerDep, values: ApiParams) -> Response:
    settings = service.settings
    allowed = settings.app_redirect_uris or (settings.effective_redirect_uri,)
    redirect_uri = values.get("redirect_uri") or allowed[0]
    if redirect_uri not in allowed:
        raise invalid("redirect_uri", "The redirect_uri is not in this service's allow-list.")
    client_id = values.get("client_id") or settings.client_id
    if client_id != settings.client_id:
        # Web authorization (a URL opened in a browser or web view) needs the Services ID.
        raise invalid("client_id", "Authorization URLs are made for the Services ID only.")
    for name in ("state", "nonce"):
        if values.get(name):
            raise invalid(name, f"The service makes the {name} itself and keeps it server-side.")
    async with service.sessions() as db:
        pending = await store.create_auth_request(
            db=db,
            kind="api",
            client_id=client_id,
            redirect_uri=redirect_uri,
            next_path="",
            ttl=settings.auth_request_ttl,
        )
        await db.commit()
    url = service.apple.authorization_url(
        client_id=client_id, redirect_uri=redirect_uri, state=pending.state, nonce=pending.nonce
    )
    return JSONResponse({"status": "ok", "url": url, "state": pending.state})


_add(
    "/api/apple_request_auth",
    ["GET", "POST"],
    apple_request_auth,
    "Make an authorization URL with server-side state",
    {"redirect_uri": "one of app_redirect_uris"},
    _API_ERRORS,
    API_KEY_SECURITY,
)


async def apple_connect(service: ContainerDep, values: ApiParams) -> Response:
    settings = service.settings
    forward = values.get("redirect_uri")
    if forward and forward not in settings.forward_uris:
        raise invalid("redirect_uri", "The redirect_uri is not in this service's allow-list.")
    if values.get("refresh_token"):
        if values.get("code"):
            raise invalid("refresh_token", "Give either a code or a refresh_token, not both.")
        result = await sign_in_with_refresh_token(
            service=service, refresh_token=values["refresh_token"]
        )
    else:
        result = await _sign_in_with_code(service, values)
    body = _connect_body(result)
    if forward:
        service.spawn(_forward(service, forward, body))
    return JSONResponse(body)


_add(
    "/api/apple_connect",
    ["POST"],
    apple_connect,
    "Sign in with an authorization code (or a refresh token)",
    {
        "code": "Apple's authorization code",
        "state": "the state from apple_request_auth",
        "redirect_uri": "one of forward_uris: also receives the result by POST",
        "id_token": "the id_token the app received from Apple",
        "nonce": "the raw nonce the app sent (native flows)",
        "user": "Apple's first-login user JSON",
        "refresh_token": "validate a stored refresh token instead of a code",
        "client_id": "which configured client id the code was issued to",
    },
    (*_API_ERRORS, "502"),
    API_KEY_SECURITY,
)


async def _sign_in_with_code(service: ServiceContainer, values: dict[str, str]) -> SignInResult:
    """``apple_connect`` with a code: from a flow this service started (``state``) or from an
    app that talked to Apple itself."""
    code = required(values, "code")
    try:
        parsed = parse_authorization_response(
            {k: values[k] for k in ("code", "id_token", "user") if k in values}
        )
    except InvalidAuthorizationResponse as exc:
        raise invalid(exc.field, str(exc)) from exc
    nonce = values.get("nonce") or None
    user = parsed.user
    name = store.RequestName(user.first_name, user.last_name) if user else None
    exchange_redirect: str | None = None
    state = values.get("state") or None
    if state is not None:
        if nonce is not None:
            raise invalid("nonce", "With a state, the service uses the nonce it issued.")
        nonce = store.nonce_for(state)
    if state is not None:
        try:
            await check_state(service, state, "api")
        except store.StateError as exc:
            raise state_error(exc.reason) from exc
    # The app's id_token is checked before the state or the code is spent.
    hinted = await verify_hint(service, parsed.id_token, nonce=nonce)
    if state is not None:
        try:
            pending, name = await claim_request(
                service=service, state=state, kind="api", code=code, name=name
            )
        except store.StateError as exc:
            raise state_error(exc.reason) from exc
        client_id = pending.client_id
        exchange_redirect = pending.redirect_uri
    else:
        settings = service.settings
        client_id = pick_client_id(settings, values)
        if client_id == settings.client_id:
            exchange_redirect = (settings.app_redirect_uris or (settings.effective_redirect_uri,))[
                0
            ]
    return await sign_in_with_code(
        service=service,
        code=code,
        client_id=client_id,
        redirect_uri=exchange_redirect,
        nonce=nonce,
        hinted=hinted,
        name=name,
        state=state,
        open_session=True,
    )


def pick_client_id(settings: Settings, values: dict[str, str]) -> str:
    """The client id a code without ``state`` was issued to: the one given, else the id_token's
    audience, else the first App ID (or the Services ID)."""
    audiences = settings.audiences
    if values.get("client_id"):
        if values["client_id"] not in audiences:
            raise invalid("client_id", "The client_id is not one this service accepts.")
        return values["client_id"]
    aud = unverified_claims(values.get("id_token")).get("aud")
    if isinstance(aud, str) and aud in audiences:
        return aud
    return settings.app_ids[0] if settings.app_ids else settings.client_id


def _connect_body(result: SignInResult) -> dict[str, Any]:
    """``apple_connect``'s answer, field by field (docs/service.md#wordpress-compatible-api)."""
    return {
        "status": "ok",
        "email": result.user.email,
        "cookie": result.session_token,
        "access_token": result.token.access_token if result.token else None,
        "id_token": dict(result.claims),
        "api_response": dict(result.token.raw) if result.token else None,
    }


async def _forward(service: ServiceContainer, url: str, body: Mapping[str, Any]) -> None:
    """POST the sign-in result to an allow-listed ``redirect_uri`` as well."""
    try:
        response = await service.outbound.post(
            url, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        log.info("forwarded a sign-in to %s: HTTP %s", url, response.status_code)
    except httpx.HTTPError as exc:
        log.warning("forwarding a sign-in to %s failed: %s", url, exc)


# --- with a session ------------------------------------------------------------------------

_SESSION: dict[str, str] = {}
"""The session is the only parameter, described by the security schemes (:mod:`..openapi`)."""


async def validate_auth_cookie(user: CurrentUser) -> Response:
    return JSONResponse({"status": "ok", "valid": True, "user_id": user.id})


async def get_currentuserinfo(user: CurrentUser) -> Response:
    return JSONResponse({"status": "ok", "user": user_json(user)})


async def logout(service: ContainerDep, session: CurrentSession) -> Response:
    async with service.sessions() as db:
        await store.end_session(db=db, raw=session.token)
        await store.audit(db=db, event="session.ended", actor="user", sub=session.user.sub)
        await db.commit()
    return JSONResponse({"status": "ok"})


async def delete_account_route(service: ContainerDep, user: CurrentUser) -> Response:
    report = await delete_account(service=service, user_id=user.id, actor="user")
    return JSONResponse(
        {
            "status": "ok",
            "deleted": True,
            "revoked_at_apple": report.revoked,
            "revoke_failed": report.revoke_failed,
            "sessions_ended": report.sessions_ended,
        }
    )


_add(
    "/api/validate_auth_cookie",
    ["GET", "POST"],
    validate_auth_cookie,
    "Check a session",
    _SESSION,
    _API_ERRORS,
    SESSION_SECURITY,
)
_add(
    "/api/get_currentuserinfo",
    ["GET", "POST"],
    get_currentuserinfo,
    "The signed-in user",
    _SESSION,
    _API_ERRORS,
    SESSION_SECURITY,
)
_add("/api/logout", ["POST"], logout, "End the session", _SESSION, _API_ERRORS, SESSION_SECURITY)
_add(
    "/api/delete_account",
    ["POST"],
    delete_account_route,
    "Revoke at Apple and delete the user",
    _SESSION,
    (*_API_ERRORS, "404"),
    SESSION_SECURITY,
)
