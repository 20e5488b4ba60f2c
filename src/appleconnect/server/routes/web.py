"""The browser sign-in flow: start, Apple's form_post callback, the finishing redirect that
sets the session cookie, and sign-out and account deletion (asked first) from a page.

Apple's POST to the callback is cross-site, so no ``SameSite=Lax`` cookie arrives with it:
everything the callback needs is looked up from the ``state`` in the body, and the session
cookie is set one redirect later, on this site's own ``/auth/apple/finish``
(docs/pitfalls.md#pitfall-form-post-loses-cookies), in the browser that started the sign-in
only (:mod:`..binding`).
"""

from __future__ import annotations

import logging
import re
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Query
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.requests import Request

from appleconnect import (
    AuthorizationResponse,
    IdentityToken,
    InvalidAuthorizationResponse,
    parse_authorization_response,
)

from .. import binding, store
from ..admin import auth as admin_auth
from ..container import ServiceContainer
from ..deps import ContainerDep, CurrentSettings, IpLimit, client_host, user_of_session
from ..errors import ServiceError, invalid, state_error
from ..health import OUTAGE_ADVICE
from ..html import templates
from ..models import AuthRequest
from ..openapi import CALLBACK_BODY, CALLBACK_RESPONSES, WEB_RESPONSES
from ..signin import claim_request, delete_account, sign_in_with_code, verify_hint

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


NextPath = Annotated[
    str,
    Query(
        description="A path on this site to return to, like /account.",
        # Documents what safe_next accepts; safe_next is what checks it.
        json_schema_extra={
            "maxLength": _NEXT_MAX,
            "pattern": r"^(/([^/\\\x00-\x1f\x7f][^\\\x00-\x1f\x7f]*)?)?$",
        },
    ),
]


def _with_query(path: str, **extra: str) -> str:
    return path + ("&" if "?" in path else "?") + urlencode(extra)


@router.get(
    "/auth/apple/start",
    summary="Start a web sign-in",
    status_code=303,
    response_class=RedirectResponse,
    responses=WEB_RESPONSES,
)
async def start(
    request: Request, service: ContainerDep, _limit: IpLimit, next: NextPath = ""
) -> Response:
    """Store a sign-in request bound to this browser (:mod:`..binding`) and 303 to Apple."""
    settings = service.settings
    next_path = safe_next(next)
    redirect_uri = settings.effective_redirect_uri
    response = RedirectResponse("/", status_code=303)
    secret = binding.bind(
        request, response, settings, max_age=settings.auth_request_ttl + HANDOFF_MAX_AGE
    )
    async with service.sessions() as db:
        try:
            pending = await store.create_auth_request(
                db=db,
                kind="web",
                client_id=settings.client_id,
                redirect_uri=redirect_uri,
                next_path=next_path,
                ttl=settings.auth_request_ttl,
                browser_secret=secret,
                client_bucket=service.limiter.address_bucket(client_host(request)),
                budget=settings.signin_budget_per_ip,
            )
        except store.BudgetExceeded as exc:
            raise too_many_signins(exc.retry_after) from exc
        await db.commit()
    response.headers["location"] = service.apple.authorization_url(
        client_id=settings.client_id,
        redirect_uri=redirect_uri,
        state=pending.state,
        nonce=pending.nonce,
    )
    return response


def too_many_signins(seconds: int) -> ServiceError:
    """429 when one address holds ``signin_budget_per_ip`` sign-ins in progress."""
    return ServiceError(
        "too_many_signins",
        "Too many sign-ins were started from your network and not finished; "
        f"try again in {seconds} second{'s' if seconds != 1 else ''}.",
        status=429,
        headers={"Retry-After": str(seconds)},
    )


# What the callback's page says in an outage (:data:`..health.OUTAGE_ADVICE`).
RESEND = (
    "The service's database cannot be reached right now. Reload this page in a few seconds "
    "and let your browser send the form again: the sign-in goes on where it stopped."
)
RESTART = (
    "The service's database cannot be reached right now, and this sign-in cannot be finished. "
    "Start it again in a few seconds."
)


@router.post(
    "/auth/apple/callback",
    summary="Apple's form_post",
    status_code=303,
    response_class=RedirectResponse,
    responses=CALLBACK_RESPONSES,
    openapi_extra={"requestBody": CALLBACK_BODY},
)
async def callback(request: Request, service: ContainerDep, _limit: IpLimit) -> Response:
    # Until the sign-in request is used up, an outage changes nothing and the same form can be
    # sent again; after that, Apple's code is spent and only a new sign-in can finish.
    setattr(request.state, OUTAGE_ADVICE, RESEND)
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
    if response.error or not response.code:
        return await _declined(service, response)
    user = response.user
    try:
        store.check_auth_request(peeked, kind="web")
        # The form_post's id_token is checked before the state is spent: a forged one changes
        # nothing.
        hinted = await verify_hint(
            service, response.id_token, nonce=store.nonce_for(response.state)
        )
        pending, name = await claim_request(
            service=service,
            state=response.state,
            kind="web",
            code=response.code,
            name=store.RequestName(user.first_name, user.last_name) if user else None,
        )
    except store.StateError as exc:
        raise state_error(exc.reason) from exc
    setattr(request.state, OUTAGE_ADVICE, RESTART)
    return await _complete(service, response, pending, hinted, name)


async def _declined(service: ServiceContainer, response: AuthorizationResponse) -> Response:
    """Apple's answer without a code: the user cancelled (back to ``next``), or an error."""
    assert response.state is not None
    async with service.sessions() as db:
        try:
            pending = await store.consume_auth_request(db=db, state=response.state, kind="web")
        except store.StateError as exc:
            raise state_error(exc.reason) from exc
        await db.commit()
    if response.cancelled:
        return RedirectResponse(_with_query(pending.next_path, signin="cancelled"), status_code=303)
    log.warning("Apple returned error %r to the callback", response.error)
    raise ServiceError("apple_error", "Sign in with Apple did not complete.")


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
    service: ServiceContainer,
    response: AuthorizationResponse,
    pending: AuthRequest,
    hinted: IdentityToken | None,
    name: store.RequestName | None,
) -> Response:
    """Sign in with the callback's code, then send the browser to ``/auth/apple/finish``."""
    assert response.code is not None
    assert response.state is not None
    result = await sign_in_with_code(
        service=service,
        code=response.code,
        client_id=pending.client_id,
        redirect_uri=pending.redirect_uri,
        nonce=store.nonce_for(response.state),
        hinted=hinted,
        name=name,
        state=response.state,
        open_session=False,
    )
    async with service.sessions() as db:
        again = await store.peek_auth_request(db=db, state=response.state)
        if again is None:  # finished or purged meanwhile
            raise state_error("expired")
        handoff = await store.set_handoff(
            db=db, request=again, user_id=result.user.id, max_age=HANDOFF_MAX_AGE
        )
        await db.commit()
    return RedirectResponse(
        "/auth/apple/finish?" + urlencode({"handoff": handoff}), status_code=303
    )


@router.get("/auth/apple/finish", include_in_schema=False)
async def finish(request: Request, service: ContainerDep, handoff: str = "") -> Response:
    """Set the session cookie, in the browser that started the sign-in only."""
    settings = service.settings
    async with service.sessions() as db:
        try:
            done = await store.consume_handoff(
                db=db, raw=handoff, browser_secrets=binding.browser_secrets(request, settings)
            )
        except store.HandoffRefused as exc:
            raise _refused(exc.reason) from exc
        token = await store.create_session(db=db, user_id=done.user_id, ttl=settings.session_ttl)
        await db.commit()
    response = RedirectResponse(done.next_path or "/", status_code=303)
    binding.forget(request, response, settings, done.browser_hash)
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


def _refused(reason: str) -> ServiceError:
    if reason == "other_browser":
        # 403: the link is valid, but this browser may not use it (it did not start the
        # sign-in, or its sign-in cookie is gone). The link stays usable where it belongs.
        return ServiceError(
            "signin_other_browser",
            "This sign-in was started in another browser (or this browser's sign-in cookie "
            "has expired), so it cannot be finished here. For your safety, start signing in "
            "again from this browser.",
            status=403,
        )
    return ServiceError("invalid_handoff", "This sign-in link was already used or has expired.")


async def same_origin(request: Request, settings: CurrentSettings) -> None:
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


@router.get("/auth/delete", include_in_schema=False)
async def web_delete_page(request: Request, service: ContainerDep) -> Response:
    """Ask first: what deleting the account does (it revokes the app's access at Apple too),
    with the button that does it. Signed out, back to the demo page."""
    token = request.cookies.get(service.settings.session_cookie)
    user = None
    if token:
        user = await store.session_user(reads=service.reads, raw=token)
    if user is None:
        return RedirectResponse("/", status_code=303)
    return templates.TemplateResponse(request, "delete.html", {"user": user})


@router.post("/auth/delete", include_in_schema=False)
async def web_delete(request: Request, _origin: SameOrigin, service: ContainerDep) -> Response:
    """Delete the account of the session, once confirmed (``confirm=delete``, the button of the
    page above); without it, that page is shown and nothing is deleted."""
    settings = service.settings
    user = await user_of_session(service, request.cookies.get(settings.session_cookie, ""))
    form = await request.form(max_files=0, max_fields=5)
    if form.get("confirm") != "delete":
        return templates.TemplateResponse(request, "delete.html", {"user": user})
    await delete_account(service=service, user_id=user.id, actor="user")
    response = RedirectResponse("/?signin=deleted", status_code=303)
    response.delete_cookie(settings.session_cookie, path="/", secure=settings.cookie_secure)
    return response
