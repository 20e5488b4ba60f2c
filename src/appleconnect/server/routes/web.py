"""The browser sign-in flow: start, Apple's form_post callback, the finishing redirect that
sets the session cookie, and sign-out and account deletion from a page.

Apple's POST to the callback is cross-site, so no ``SameSite=Lax`` cookie arrives with it:
everything the callback needs is looked up from the ``state`` in the body, and the session
cookie is set one redirect later, on this site's own ``/auth/apple/finish``
(docs/pitfalls.md#pitfall-form-post-loses-cookies).
"""

from __future__ import annotations

import logging
import re
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.requests import Request

from appleconnect import (
    AuthorizationResponse,
    InvalidAuthorizationResponse,
    parse_authorization_response,
)

from .. import store
from ..admin import auth as admin_auth
from ..container import ServiceContainer
from ..deps import ContainerDep, CurrentSettings, IpLimit, user_of_session
from ..errors import ServiceError, invalid, state_error
from ..html import templates
from ..models import AuthRequest
from ..openapi import WEB_RESPONSES
from ..signin import delete_account, sign_in_with_code

__all__ = ["HANDOFF_MAX_AGE", "router", "safe_next"]

log = logging.getLogger(__name__)
router = APIRouter()

HANDOFF_MAX_AGE = 120
_NEXT_MAX = 512


def safe_next(value: str | None) -> str:
    """A same-site path to return to after sign-in; anything else is refused (no open redirect)."""
    if not value:
        return "/"
    parts = urlsplit(value)
    if (
        len(value) > _NEXT_MAX
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or re.search(r"[\x00-\x1f\x7f]", value)
        or parts.scheme
        or parts.netloc
    ):
        raise invalid("next", "The 'next' parameter must be a path on this site, like /account.")
    return value


def _with_query(path: str, **extra: str) -> str:
    return path + ("&" if "?" in path else "?") + urlencode(extra)


@router.get("/auth/apple/start", summary="Start a web sign-in", responses=WEB_RESPONSES)
async def start(service: ContainerDep, _limit: IpLimit, next: str | None = None) -> Response:
    settings = service.settings
    next_path = safe_next(next)
    redirect_uri = settings.effective_redirect_uri
    async with service.sessions() as db:
        pending = await store.create_auth_request(
            db=db,
            kind="web",
            client_id=settings.client_id,
            redirect_uri=redirect_uri,
            next_path=next_path,
            ttl=settings.auth_request_ttl,
        )
        await db.commit()
    url = service.apple.authorization_url(
        client_id=settings.client_id,
        redirect_uri=redirect_uri,
        state=pending.state,
        nonce=pending.nonce,
    )
    return RedirectResponse(url, status_code=303)


@router.post("/auth/apple/callback", summary="Apple's form_post", responses=WEB_RESPONSES)
async def callback(request: Request, service: ContainerDep, _limit: IpLimit) -> Response:
    form = await request.form(max_files=0, max_fields=20)
    try:
        response = parse_authorization_response(
            {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form}
        )
    except InvalidAuthorizationResponse as exc:
        log.info("malformed callback: %s", exc)
        raise invalid(exc.field, "Apple's response could not be read.") from exc
    if not response.state:
        raise invalid("state", "The sign-in response has no state; start again.")
    async with service.sessions() as db:
        peeked = await store.peek_auth_request(db=db, state=response.state)
        if peeked is not None and peeked.kind == "api" and response.code:
            return _api_handoff(request, response, form)
        try:
            pending = await store.consume_auth_request(db=db, state=response.state, kind="web")
        except store.StateError as exc:
            raise state_error(exc.reason) from exc
        await db.commit()
    if response.error:
        if response.cancelled:
            return RedirectResponse(
                _with_query(pending.next_path, signin="cancelled"), status_code=303
            )
        log.warning("Apple returned error %r to the callback", response.error)
        raise ServiceError("apple_error", "Sign in with Apple did not complete.")
    return await _complete(service, response, pending)


def _api_handoff(request: Request, response: AuthorizationResponse, form: FormData) -> Response:
    """A flow an app started with ``apple_request_auth``: hand the code to the app's page,
    which passes it on to ``apple_connect``."""
    assert response.code is not None
    assert response.state is not None
    payload = {"code": response.code, "state": response.state}
    if response.id_token:
        payload["id_token"] = response.id_token
    user_field = form.get("user")
    if isinstance(user_field, str):
        payload["user"] = user_field
    return templates.TemplateResponse(request, "handoff.html", {"payload": payload})


async def _complete(
    service: ServiceContainer, response: AuthorizationResponse, pending: AuthRequest
) -> Response:
    """Sign in with the callback's code, then send the browser to ``/auth/apple/finish``."""
    assert response.code is not None
    assert response.state is not None
    name = response.user
    result = await sign_in_with_code(
        service=service,
        code=response.code,
        client_id=pending.client_id,
        redirect_uri=pending.redirect_uri,
        nonce=pending.nonce,
        id_token_hint=response.id_token,
        first_name=name.first_name if name else None,
        last_name=name.last_name if name else None,
        open_session=False,
    )
    async with service.sessions() as db:
        again = await store.peek_auth_request(db=db, state=response.state)
        assert again is not None
        handoff = await store.set_handoff(db=db, request=again, user_id=result.user.id)
        await db.commit()
    return RedirectResponse(
        "/auth/apple/finish?" + urlencode({"handoff": handoff}), status_code=303
    )


@router.get("/auth/apple/finish", include_in_schema=False)
async def finish(service: ContainerDep, handoff: str = "") -> Response:
    settings = service.settings
    async with service.sessions() as db:
        pending = await store.consume_handoff(db=db, raw=handoff, max_age=HANDOFF_MAX_AGE)
        if pending is None or pending.user_id is None:
            raise ServiceError(
                "invalid_handoff", "This sign-in link was already used or has expired."
            )
        token = await store.create_session(db=db, user_id=pending.user_id, ttl=settings.session_ttl)
        await db.commit()
    response = RedirectResponse(pending.next_path or "/", status_code=303)
    response.set_cookie(
        settings.session_cookie,
        token,
        max_age=settings.session_ttl,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="lax",
        path="/",
    )
    return response


def same_origin(request: Request, settings: CurrentSettings) -> None:
    """Refuse a form posted from another site (``Origin: null`` passes, unlike in the admin
    panel)."""
    origin = request.headers.get("origin")
    if origin != "null" and not admin_auth.same_origin(
        settings, origin, request.headers.get("host")
    ):
        raise ServiceError("forbidden", "Cross-site request refused.", status=403)


SameOrigin = Annotated[None, Depends(same_origin)]


@router.post("/auth/logout", include_in_schema=False)
async def web_logout(request: Request, _origin: SameOrigin, service: ContainerDep) -> Response:
    settings = service.settings
    token = request.cookies.get(settings.session_cookie)
    if token:
        async with service.sessions() as db:
            await store.end_session(db=db, raw=token)
            await db.commit()
    response = RedirectResponse("/?signin=signed_out", status_code=303)
    response.delete_cookie(settings.session_cookie, path="/", secure=settings.cookie_secure)
    return response


@router.post("/auth/delete", include_in_schema=False)
async def web_delete(request: Request, _origin: SameOrigin, service: ContainerDep) -> Response:
    settings = service.settings
    user = await user_of_session(service, request.cookies.get(settings.session_cookie, ""))
    await delete_account(service=service, user_id=user.id, actor="user")
    response = RedirectResponse("/?signin=deleted", status_code=303)
    response.delete_cookie(settings.session_cookie, path="/", secure=settings.cookie_secure)
    return response
