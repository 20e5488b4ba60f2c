"""Apple's endpoints on Apple's paths: discovery, keys, authorize (with the consent page), token,
revoke, user migration and the button images. The rules themselves are in :mod:`.protocol`."""

from __future__ import annotations

import json
import logging
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.routing import Route

from appleconnect import buttons

from . import protocol, web_message
from ._errors import OAuthError
from ._http import (
    JSON_MEDIA_TYPE,
    MAX_FORM_BYTES,
    NO_STORE,
    BodyTooLarge,
    apple_error,
    apple_json,
    parse_authorize_query,
    parse_form,
    read_apple_form,
    read_body,
    root_path,
)
from .consent import ConsentMistake, answer_consent, consent_page
from .deps import BaseUrlDep, PagesDep, StateDep, state_of
from .pages import Pages

log = logging.getLogger(__name__)

router = APIRouter()

CLAIMS_SUPPORTED = (
    "aud",
    "email",
    "email_verified",
    "exp",
    "iat",
    "is_private_email",
    "iss",
    "nonce",
    "nonce_supported",
    "real_user_status",
    "sub",
    "transfer_sub",
)


def _refused(endpoint: str, exc: OAuthError) -> Response:
    log.info("%s refused: %s (%s)", endpoint, exc.error, exc.description)
    return apple_error(exc)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def authorize_error(request: Request, pages: Pages, exc: OAuthError) -> Response:
    """Apple answers 400 with JSON ``{"error": ...}``, shown as a page to a browser (TN3107)."""
    log.info("authorization refused: %s (%s)", exc.error, exc.description)
    if _wants_html(request):
        return pages.error(exc)
    return apple_error(exc)


def _consent_action(request: Request) -> str:
    return f"{root_path(request)}/auth/authorize/consent"


def deliver(pages: Pages, result: protocol.AuthorizationResult) -> Response:
    """Send the authorization result: a self-posting form, a message to the opener, or a
    redirect."""
    if result.response_mode == "form_post":
        assert result.redirect_uri is not None
        return pages.render(
            "form_post.html", redirect_uri=result.redirect_uri, params=result.params
        )
    if result.response_mode == "web_message":
        return pages.render("web_message.html", **web_message.page_context(result))
    return RedirectResponse(result.location(), status_code=302, headers=NO_STORE)


@router.get("/.well-known/openid-configuration")
async def discovery(state: StateDep, base: BaseUrlDep) -> Response:
    """The discovery document as Apple publishes it, with this emulator's endpoint URLs (built
    from the configured base URL, never from the request's ``Host`` header)."""
    return apple_json(
        {
            "issuer": state.issuer,
            "authorization_endpoint": f"{base}/auth/authorize",
            "token_endpoint": f"{base}/auth/token",
            "revocation_endpoint": f"{base}/auth/revoke",
            "jwks_uri": f"{base}/auth/keys",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "name"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "claims_supported": list(CLAIMS_SUPPORTED),
        }
    )


@router.get("/auth/keys")
async def keys(state: StateDep) -> Response:
    """The JWKS: the signing key, then rotated-out keys still in their grace period."""
    return Response(
        content=json.dumps(state.jwks()),
        media_type=JSON_MEDIA_TYPE,
        headers={"Cache-Control": "max-age=86400"},
    )


@router.get("/auth/authorize")
async def authorize_page(request: Request, state: StateDep, pages: PagesDep) -> Response:
    """Validate the request like Apple, then show the consent page."""
    try:
        params = parse_authorize_query(request.scope.get("query_string", b""))
        validated = protocol.validate_authorize(state, params)
        if validated.response_mode == "web_message":
            web_message.check_opener(request, validated)
    except OAuthError as exc:
        return authorize_error(request, pages, exc)
    return pages.render("consent.html", **consent_page(state, validated, _consent_action(request)))


@router.post("/auth/authorize/consent")
async def consent(request: Request, state: StateDep, pages: PagesDep) -> Response:
    """The consent form's answer: deliver the result to the redirect URI. A mistake on the form
    shows a browser the form again, with the error beside the field and the answer kept."""
    try:
        result = answer_consent(state, parse_form(await read_body(request, MAX_FORM_BYTES)))
    except BodyTooLarge:
        too_large = OAuthError("invalid_request", "The request body is too large.")
        return authorize_error(request, pages, too_large)
    except ConsentMistake as exc:
        if not _wants_html(request):
            return authorize_error(request, pages, exc)
        log.info("consent form asked again: %s (%s)", exc.field, exc.description)
        return pages.render("consent.html", 400, action=_consent_action(request), **exc.page)
    except OAuthError as exc:
        return authorize_error(request, pages, exc)
    return deliver(pages, result)


# Apple's three form endpoints are plain Starlette routes: they read their form themselves and
# need nothing from FastAPI, whose parameter analysis and dependency solving cost about a third
# of an RSA signature per request, a sixth of a whole code exchange (docs/emulator.md#speed).


async def token_endpoint(request: Request) -> Response:
    """Exchange a code, validate a refresh token, or get a ``user.migration`` token."""
    state = state_of(request)
    try:
        form = await read_apple_form(request)
        return apple_json(protocol.token(state, form))
    except OAuthError as exc:
        return _refused("token", exc)


async def revoke_endpoint(request: Request) -> Response:
    """Revoke a token: 200 with an empty body, also for a token that was already invalid."""
    state = state_of(request)
    try:
        form = await read_apple_form(request)
        ended = protocol.revoke(state, form)
    except OAuthError as exc:
        return _refused("revoke", exc)
    if ended is not None:
        log.info("revoke: consent of Apple ID %s for team %s ended", *ended)
    return Response(status_code=200, headers=NO_STORE)


async def migration_endpoint(request: Request) -> Response:
    """Generate or exchange a ``transfer_sub`` (TN3159)."""
    state = state_of(request)
    authorization = request.headers.get("authorization", "")
    scheme, _, bearer = authorization.partition(" ")
    try:
        form = await read_apple_form(request)
        out = protocol.usermigrationinfo(
            state, form, bearer.strip() if scheme.lower() == "bearer" else None
        )
    except OAuthError as exc:
        return _refused("usermigrationinfo", exc)
    return apple_json(out)


FORM_ROUTES = (
    Route("/auth/token", token_endpoint, methods=["POST"]),
    Route("/auth/revoke", revoke_endpoint, methods=["POST"]),
    Route("/auth/usermigrationinfo", migration_endpoint, methods=["POST"]),
)
"""``/auth/token``, ``/auth/revoke`` and ``/auth/usermigrationinfo``, for the app's router."""


def _button(kind: Literal["center", "left", "logo"], request: Request) -> Response:
    try:
        spec = buttons.parse_button_query(kind, request.query_params)
    except buttons.ButtonParamsError:
        return Response(status_code=404)
    return Response(
        buttons.render_png(spec),
        media_type="image/png",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.get("/appleid/button")
async def button_center(request: Request) -> Response:
    """Apple's center-aligned button image (PNG); 404 on any invalid parameter."""
    return _button("center", request)


@router.get("/appleid/button/left")
async def button_left(request: Request) -> Response:
    """Apple's left-aligned button image (PNG); 404 on any invalid parameter."""
    return _button("left", request)


@router.get("/appleid/button/logo")
async def button_logo(request: Request) -> Response:
    """Apple's logo-only button image (PNG); 404 on any invalid parameter."""
    return _button("logo", request)
