"""The FastAPI dependencies of the service's routes, all in one place.

A route declares what it needs as a parameter, ``service: ContainerDep`` or ``user: CurrentUser``,
and FastAPI computes it once per request, in the order the parameters are declared; a
dependency that refuses the request raises (:class:`.errors.ServiceError` for the API and the
sign-in pages, :class:`.errors.AdminRequired` or :class:`.errors.Forbidden` for the admin
panel), and the exception handlers (:mod:`.error_handlers`) answer.

None of them declares a query, header or body parameter, so they add no parameter to the
OpenAPI document: the REST API's parameters are read by :func:`.params.read_params` and
described by :mod:`.openapi`. The API key and the session declare FastAPI security schemes
(:data:`API_KEY_SCHEMES`, :data:`SESSION_SCHEMES`) only so that the document names the ways
they may be sent; the values are read by :func:`.params.api_key_of` and
:func:`.params.bearer_or_param`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPBearer
from starlette.datastructures import FormData
from starlette.requests import Request

from . import store
from .admin import auth
from .container import ServiceContainer
from .errors import AdminRequired, Forbidden, ServiceError
from .live_settings import LiveSettings
from .models import User
from .params import API_KEY_HEADER, api_key_of, bearer_or_param, read_params
from .ratelimit import rate_limited
from .settings import Settings

__all__ = [
    "AdminForm",
    "AdminFormWithFile",
    "AdminSession",
    "ApiKey",
    "ContainerDep",
    "CurrentSettings",
    "CurrentUser",
    "IpLimit",
    "LiveSettingsDep",
    "Params",
    "SessionToken",
    "client_host",
    "get_container",
    "user_of_session",
]

ADMIN_FORM_FIELDS = 40


# --- the service ---------------------------------------------------------------------------


def get_container(request: Request) -> ServiceContainer:
    """The service container the lifespan built for this app."""
    service: ServiceContainer = request.app.state.container
    return service


async def _container(request: Request) -> ServiceContainer:
    # Every dependency is a coroutine function: FastAPI runs a plain function in a worker
    # thread, a thread hop per request (docs/performance.md).
    return get_container(request)


ContainerDep = Annotated[ServiceContainer, Depends(_container)]


async def current_settings(service: ContainerDep) -> Settings:
    """The settings in force now: the admin panel swaps in a new object when it changes one."""
    return service.settings


CurrentSettings = Annotated[Settings, Depends(current_settings)]


def get_live_settings(request: Request) -> LiveSettings:
    """What the process started with and what the admin panel stored (:mod:`.live_settings`)."""
    runtime: LiveSettings = request.app.state.live_settings
    return runtime


async def _live_settings(request: Request) -> LiveSettings:
    return get_live_settings(request)


LiveSettingsDep = Annotated[LiveSettings, Depends(_live_settings)]


async def get_params(request: Request) -> dict[str, str]:
    """The REST API's parameters, from the query string and the body (:func:`.read_params`)."""
    return await read_params(request)


Params = Annotated[dict[str, str], Depends(get_params)]


# --- how the API key and the session token may be sent (for the OpenAPI document) -----------

_DISCOURAGED = "discouraged: query strings end up in logs, histories and Referer headers"
API_KEY_SCHEMES = (
    APIKeyHeader(
        name=API_KEY_HEADER,
        scheme_name="apiKeyHeader",
        description="The API key (preferred).",
        auto_error=False,
    ),
    APIKeyQuery(
        name="key",
        scheme_name="apiKeyParameter",
        description=f"The API key as the 'key' parameter, in the query or the body "
        f"({_DISCOURAGED}).",
        auto_error=False,
    ),
)
SESSION_SCHEMES = (
    HTTPBearer(
        scheme_name="sessionBearer",
        description="The session token from apple_connect: Authorization: Bearer acs_… "
        "(preferred).",
        auto_error=False,
    ),
    APIKeyQuery(
        name="cookie",
        scheme_name="sessionParameter",
        description="The session token as the 'cookie' parameter, in the query or the body "
        f"({_DISCOURAGED}).",
        auto_error=False,
    ),
)
_KeyHeader = Annotated[object, Security(API_KEY_SCHEMES[0])]
_KeyParameter = Annotated[object, Security(API_KEY_SCHEMES[1])]
_SessionBearer = Annotated[object, Security(SESSION_SCHEMES[0])]
_SessionParameter = Annotated[object, Security(SESSION_SCHEMES[1])]


# --- rate limits and the API key -----------------------------------------------------------


def client_host(request: Request) -> str | None:
    # Behind a proxy, uvicorn's --forwarded-allow-ips makes this the real client.
    return request.client.host if request.client else None


async def limit_ip(request: Request, service: ContainerDep) -> None:
    """Count the request against its client IP (shared by all processes), or raise 429."""
    wait = await service.limiter.hit_ip(sessions=service.sessions, host=client_host(request))
    if wait is not None:
        raise rate_limited(wait)


IpLimit = Annotated[None, Depends(limit_ip)]


async def require_api_key(
    request: Request,
    service: ContainerDep,
    values: Params,
    _header: _KeyHeader,
    _parameter: _KeyParameter,
) -> None:
    """Check the API key (``X-API-Key`` or ``key``), counting the request against the client
    IP and the key.

    The IP is counted first and also for a wrong key, which caps key guessing; the key is
    looked up with one read (:func:`.store.check_api_key`).
    """
    raw = api_key_of(request, values)
    limiter = service.limiter
    wait = await limiter.hit_ip(sessions=service.sessions, host=client_host(request))
    if wait is not None:
        raise rate_limited(wait)
    if not raw:
        raise ServiceError(
            "missing_parameter",
            "Give the API key in the X-API-Key header or the 'key' parameter.",
            status=401,
            field="key",
        )
    key_id = await store.check_api_key(reads=service.reads, sessions=service.sessions, raw=raw)
    if key_id is None:
        raise ServiceError(
            "invalid_key", "The API key is invalid or revoked.", status=401, field="key"
        )
    key_wait = await limiter.hit_key(sessions=service.sessions, key_id=key_id)
    if key_wait is not None:
        raise rate_limited(key_wait, field="key")


ApiKey = Annotated[None, Depends(require_api_key)]


# --- the signed-in user --------------------------------------------------------------------


async def session_token(
    request: Request,
    _limit: IpLimit,
    values: Params,
    _bearer: _SessionBearer,
    _parameter: _SessionParameter,
) -> str:
    """The session an app sends: ``Authorization: Bearer`` or the ``cookie`` parameter; the
    request is counted against its client IP first."""
    return bearer_or_param(request, values)


SessionToken = Annotated[str, Depends(session_token)]


async def user_of_session(service: ServiceContainer, token: str) -> User:
    """The user a session token belongs to, or ``invalid_cookie`` (401)."""
    user = await store.session_user(reads=service.reads, raw=token)
    if user is None:
        raise ServiceError(
            "invalid_cookie",
            "The session is invalid or has expired.",
            status=401,
            field="cookie",
        )
    return user


async def current_user(service: ContainerDep, token: SessionToken) -> User:
    return await user_of_session(service, token)


CurrentUser = Annotated[User, Depends(current_user)]


# --- the admin panel -----------------------------------------------------------------------


async def admin_session(request: Request, service: ContainerDep) -> str:
    """The admin session token from its cookie, or :class:`AdminRequired`; also makes the
    session's CSRF token available to the page (``request.state.admin_csrf``)."""
    raw = request.cookies.get(auth.admin_cookie(service.settings)[0], "")
    if not raw:
        raise AdminRequired
    async with service.sessions() as db:
        if not await auth.valid_admin_session(db=db, raw=raw):
            raise AdminRequired
    request.state.admin_csrf = auth.csrf_token(raw)
    return raw


AdminSession = Annotated[str, Depends(admin_session)]


async def admin_same_origin(request: Request, settings: CurrentSettings) -> None:
    """Refuse (:class:`Forbidden`) a form that says it came from another origin."""
    if not auth.same_origin(settings, request.headers.get("origin"), request.headers.get("host")):
        raise Forbidden


async def _admin_form(request: Request, raw: str, files: int) -> FormData:
    form = await request.form(max_files=files, max_fields=ADMIN_FORM_FIELDS)
    token = form.get("csrf")
    if not isinstance(token, str) or not auth.check_csrf(raw, token):
        raise Forbidden
    return form


async def admin_form(
    request: Request, raw: AdminSession, _origin: Annotated[None, Depends(admin_same_origin)]
) -> FormData:
    """The POSTed form of an admin page, after the session, origin and CSRF checks."""
    return await _admin_form(request, raw, files=0)


async def admin_form_with_file(
    request: Request, raw: AdminSession, _origin: Annotated[None, Depends(admin_same_origin)]
) -> FormData:
    """As :func:`admin_form`, for the one form that uploads a file (the .p8 key)."""
    return await _admin_form(request, raw, files=1)


AdminForm = Annotated[FormData, Depends(admin_form)]
AdminFormWithFile = Annotated[FormData, Depends(admin_form_with_file)]
