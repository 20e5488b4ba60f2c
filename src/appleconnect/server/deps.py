"""The FastAPI dependencies of the service's routes, all in one place.

A route declares what it needs as a parameter, ``service: ContainerDep`` or ``user: CurrentUser``,
and FastAPI computes it once per request, in the order the parameters are declared; a
dependency that refuses the request raises (:class:`.errors.ServiceError` for the API and the
sign-in pages, :class:`.errors.AdminRequired` or :class:`.errors.Forbidden` for the admin
panel), and the exception handlers (:mod:`.error_handlers`) answer.

None of them declares a query, header or body parameter, so they add no parameter to the
OpenAPI document: the REST API's parameters are read by :func:`.params.read_params` and
described by :mod:`.openapi`, which also names the ways the API key and the session may be
sent (its security schemes); the values are read by :func:`.params.api_key_of` and
:func:`.params.bearer_or_param`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.datastructures import FormData
from starlette.requests import Request

from . import store
from .admin import auth
from .container import ServiceContainer
from .errors import AdminRequired, Forbidden, ServiceError
from .live_settings import LiveSettings
from .models import User
from .params import api_key_of, bearer_or_param, read_params
from .ratelimit import rate_limited
from .settings import Settings

__all__ = [
    "AdminForm",
    "AdminFormWithFile",
    "AdminSession",
    "ApiParams",
    "ContainerDep",
    "CurrentSession",
    "CurrentSettings",
    "CurrentUser",
    "IpLimit",
    "LiveSettingsDep",
    "SignedIn",
    "check_api_key",
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


# --- rate limits, the API key and the session ----------------------------------------------
#
# A route of the REST API declares one dependency for its credential (ApiParams, CurrentUser,
# CurrentSession) that does the whole check in one coroutine: each dependency FastAPI resolves
# costs a few microseconds of its own, and the session check is the service's most frequent
# request (docs/performance.md#framework-cost-per-request). How the key and the session may be
# sent is declared in the OpenAPI document by :mod:`.openapi`, not by FastAPI security schemes.


def client_host(request: Request) -> str | None:
    # Behind a proxy, uvicorn's --forwarded-allow-ips makes this the real client.
    return request.client.host if request.client else None


async def _hit_ip(request: Request, service: ServiceContainer) -> None:
    wait = await service.limiter.hit_ip(sessions=service.sessions, host=client_host(request))
    if wait is not None:
        raise rate_limited(wait)


async def limit_ip(request: Request, service: ContainerDep) -> None:
    """Count the request against its client IP (shared by all processes), or raise 429."""
    await _hit_ip(request, service)


IpLimit = Annotated[None, Depends(limit_ip)]


async def check_api_key(
    request: Request, service: ServiceContainer, values: dict[str, str]
) -> None:
    """Check the API key (``X-API-Key`` or ``key``), counting the request against the client
    IP and the key.

    The IP is counted first and also for a wrong key, which caps key guessing; the key is
    looked up with one read (:func:`.store.check_api_key`).
    """
    raw = api_key_of(request, values)
    await _hit_ip(request, service)
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
    key_wait = await service.limiter.hit_key(sessions=service.sessions, key_id=key_id)
    if key_wait is not None:
        raise rate_limited(key_wait, field="key")


async def api_params(request: Request) -> dict[str, str]:
    """The parameters of a REST API call (:func:`.read_params`), once its API key is checked
    (:func:`check_api_key`): a malformed parameter is refused before the key is looked at."""
    values = await read_params(request)
    await check_api_key(request, get_container(request), values)
    return values


ApiParams = Annotated[dict[str, str], Depends(api_params)]


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


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The session a REST API call names (its token) and the user it belongs to."""

    token: str
    user: User


async def current_session(request: Request) -> SignedIn:
    """The session an app sends, ``Authorization: Bearer`` or the ``cookie`` parameter
    (:func:`.bearer_or_param`), and its user; the request is counted against its client IP
    first, and an unknown or expired session is ``invalid_cookie`` (401)."""
    service = get_container(request)
    await _hit_ip(request, service)
    token = bearer_or_param(request, await read_params(request))
    return SignedIn(token, await user_of_session(service, token))


async def current_user(request: Request) -> User:
    """The signed-in user of a REST API call (:func:`current_session`)."""
    return (await current_session(request)).user


CurrentSession = Annotated[SignedIn, Depends(current_session)]
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
