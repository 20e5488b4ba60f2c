"""The emulator's ASGI app: Apple's endpoints on Apple's paths, plus the optional control API."""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from appleconnect import buttons

from . import protocol
from ._errors import AppleError
from .faults import FaultInjector, FaultMiddleware
from .notifications import Notifier
from .state import APPLE_ISSUER, Account, EmulatorState, StateError

MAX_FORM_BYTES = 16 * 1024
"""Largest body accepted on Apple's POST endpoints and the consent form."""
MAX_FORM_FIELDS = 32
MAX_QUERY_BYTES = 8 * 1024
"""Largest query string accepted on ``/auth/authorize``."""


def _answered() -> AppleError:
    return AppleError(
        "invalid_request", "This sign-in request has expired or was already answered."
    )


JSON_MEDIA_TYPE = "application/json;charset=UTF-8"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class BodyTooLarge(Exception):
    """Raised when a request body exceeds its limit."""


def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("appleconnect.emulator", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def root_path(request: Request) -> str:
    """The prefix the app is mounted under (``""`` at the root); every generated URL uses it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def base_url(request: Request) -> str:
    """The emulator's own base URL as the client reached it, mount prefix included."""
    return f"{request.url.scheme}://{request.url.netloc}{root_path(request)}"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_form(body: bytes) -> dict[str, str]:
    """Parse ``application/x-www-form-urlencoded``; a repeated or undecodable field is
    ``invalid_request`` (Apple: "a parameter is ... repeated")."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise AppleError("invalid_request", "The request body is malformed.") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise AppleError("invalid_request", f"The parameter {name} is repeated.")
        form[name] = value
    return form


def apple_json(body: Mapping[str, Any], status: int = 200) -> Response:
    """A JSON answer with Apple's headers (``Cache-Control: no-store``, ``Pragma: no-cache``)."""
    return Response(
        content=json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type=JSON_MEDIA_TYPE,
        headers=NO_STORE,
    )


def apple_error(exc: AppleError) -> Response:
    """Apple's ``ErrorResponse``: HTTP 400 with ``{"error", "error_description"}``."""
    return apple_json(exc.as_json(), exc.status)


async def read_apple_form(request: Request) -> dict[str, str]:
    """The body of ``/auth/token``, ``/auth/revoke`` or ``/auth/usermigrationinfo``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise AppleError("invalid_request", "Invalid content type.")
    try:
        body = await read_body(request, MAX_FORM_BYTES)
    except BodyTooLarge as exc:
        raise AppleError("invalid_request", "The request body is too large.") from exc
    return parse_form(body)


def parse_authorize_query(query: bytes) -> dict[str, list[str]]:
    """The query string of an authorization request, refused when too large or malformed."""
    if len(query) > MAX_QUERY_BYTES:
        raise AppleError("invalid_request", "The request is too large.")
    try:
        return urllib.parse.parse_qs(
            query.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise AppleError("invalid_request", "The request is malformed.") from exc


def consent_page(
    state: EmulatorState, request: protocol.AuthorizeRequest, action: str
) -> dict[str, Any]:
    """Remember a validated request; the consent page's context, with ``action`` to post to."""
    pending = state.save_pending(request.as_params())
    return {
        "action": action,
        "request_id": pending.id,
        "client_id": request.client.client_id,
        "accounts": state.list_accounts(),
        "scopes": request.scopes,
    }


def answer_consent(state: EmulatorState, form: Mapping[str, str]) -> protocol.AuthorizationResult:
    """The consent form's answer, delivered to the client: the user's choice, or cancel.

    The pending request is re-validated (the client may have changed since) and consumed only
    once the answer is valid, so that a mistake on the form (say, an invalid new email) leaves
    the page usable.
    """
    pending_id = form.get("request_id", "")
    pending = state.peek_pending(pending_id)
    if pending is None:
        raise _answered()
    validated = protocol.validate_authorize(state, {k: [v] for k, v in pending.params.items()})
    account = None
    if form.get("action") == "continue":
        try:
            account = _consent_account(state, form)
        except StateError as exc:
            raise AppleError("invalid_request", str(exc)) from exc
    if state.take_pending(pending_id) is None:
        raise _answered()
    return protocol.authorize(
        state,
        validated,
        account=account,
        cancel=account is None,
        share_email=form.get("share_email", "share") != "hide",
        first_name=form.get("first_name") or None,
        last_name=form.get("last_name") or None,
    )


def create_emulator_app(
    *,
    state_dir: Path | None = None,
    issuer: str = APPLE_ISSUER,
    control_api: bool = True,
    clock: Callable[[], float] | None = None,
    notification_transport: httpx.AsyncBaseTransport | None = None,
    notification_retry_delays: Sequence[float] = (0.5, 2.0, 5.0),
    fault_seed: int | None = None,
) -> FastAPI:
    """Build the emulator of Apple's side of Sign in with Apple as an ASGI app.

    ``state_dir=None`` keeps everything in memory; otherwise teams, keys, accounts, consents,
    codes and tokens persist in ``state_dir`` and ``credentials.json`` is written there.
    ``clock`` returns Unix seconds (default ``time.time``); the control API can add an offset.
    ``notification_transport`` lets an in-process caller receive server-to-server notifications
    without a socket. ``app.state.emulator`` is the :class:`EmulatorState`, ``app.state.notifier``
    the :class:`Notifier` and ``app.state.faults`` the :class:`FaultInjector`.
    """
    state = EmulatorState(state_dir=state_dir, issuer=issuer, clock=clock)
    if state_dir is not None:
        state.write_credentials()
    notifier = Notifier(
        state, transport=notification_transport, retry_delays=notification_retry_delays
    )
    faults = FaultInjector(seed=fault_seed)
    templates = _templates()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await notifier.aclose()

    app = FastAPI(
        title="appleconnect Apple ID emulator",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.emulator = state
    app.state.notifier = notifier
    app.state.faults = faults
    app.add_middleware(FaultMiddleware, injector=faults)

    def html(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        script_nonce = secrets.token_urlsafe(12)
        body = templates.get_template(template).render(script_nonce=script_nonce, **context)
        csp = (
            "default-src 'none'; style-src 'unsafe-inline'; "
            f"script-src 'nonce-{script_nonce}'; form-action 'self' http: https:; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return HTMLResponse(
            body,
            status_code=status,
            headers={**NO_STORE, "Content-Security-Policy": csp, "Referrer-Policy": "no-referrer"},
        )

    def authorize_error(request: Request, exc: AppleError) -> Response:
        # Apple answers 400 with JSON {"error": ...}, shown as a page to a browser (TN3107).
        if "text/html" in request.headers.get("accept", ""):
            return html("error.html", exc.status, error=exc.error, description=exc.description)
        return apple_error(exc)

    def deliver(result: protocol.AuthorizationResult) -> Response:
        if result.response_mode == "form_post":
            assert result.redirect_uri is not None
            return html("form_post.html", redirect_uri=result.redirect_uri, params=result.params)
        return RedirectResponse(result.location(), status_code=302, headers=NO_STORE)

    @app.get("/.well-known/openid-configuration")
    async def discovery(request: Request) -> Response:
        """The discovery document as Apple publishes it, with this emulator's endpoint URLs."""
        base = base_url(request)
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
                "claims_supported": [
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
                ],
            }
        )

    @app.get("/auth/keys")
    async def keys() -> Response:
        """The JWKS: the signing key, then rotated-out keys still in their grace period."""
        return Response(
            content=json.dumps(state.jwks()),
            media_type=JSON_MEDIA_TYPE,
            headers={"Cache-Control": "max-age=86400"},
        )

    @app.get("/auth/authorize")
    async def authorize_page(request: Request) -> Response:
        """Validate the request like Apple, then show the consent page."""
        try:
            params = parse_authorize_query(request.scope.get("query_string", b""))
            validated = protocol.validate_authorize(state, params)
        except AppleError as exc:
            return authorize_error(request, exc)
        action = f"{root_path(request)}/auth/authorize/consent"
        return html("consent.html", **consent_page(state, validated, action))

    @app.post("/auth/authorize/consent")
    async def consent(request: Request) -> Response:
        """The consent form's answer: deliver the result to the redirect URI."""
        try:
            result = answer_consent(state, parse_form(await read_body(request, MAX_FORM_BYTES)))
        except BodyTooLarge:
            return authorize_error(
                request, AppleError("invalid_request", "The request body is too large.")
            )
        except AppleError as exc:
            return authorize_error(request, exc)
        return deliver(result)

    @app.post("/auth/token")
    async def token_endpoint(request: Request) -> Response:
        """Exchange a code, validate a refresh token, or get a ``user.migration`` token."""
        try:
            form = await read_apple_form(request)
            return apple_json(protocol.token(state, form))
        except AppleError as exc:
            return apple_error(exc)

    @app.post("/auth/revoke")
    async def revoke_endpoint(request: Request) -> Response:
        """Revoke a token: 200 with an empty body, also for a token that was already invalid."""
        try:
            form = await read_apple_form(request)
            protocol.revoke(state, form)
        except AppleError as exc:
            return apple_error(exc)
        return Response(status_code=200, headers=NO_STORE)

    @app.post("/auth/usermigrationinfo")
    async def migration_endpoint(request: Request) -> Response:
        """Generate or exchange a ``transfer_sub`` (TN3159)."""
        authorization = request.headers.get("authorization", "")
        scheme, _, bearer = authorization.partition(" ")
        try:
            form = await read_apple_form(request)
            out = protocol.usermigrationinfo(
                state, form, bearer.strip() if scheme.lower() == "bearer" else None
            )
        except AppleError as exc:
            return apple_error(exc)
        return apple_json(out)

    def button(kind: str) -> Callable[[Request], Any]:
        async def route(request: Request) -> Response:
            try:
                spec = buttons.parse_button_query(kind, request.query_params)  # type: ignore[arg-type]
            except buttons.ButtonParamsError:
                return Response(status_code=404)
            return Response(
                buttons.render_png(spec),
                media_type="image/png",
                headers={"Cache-Control": "public, max-age=86400"},
            )

        route.__doc__ = f"Apple's {kind} button image (PNG); 404 on any invalid parameter."
        return route

    app.add_api_route("/appleid/button", button("center"), methods=["GET"])
    app.add_api_route("/appleid/button/left", button("left"), methods=["GET"])
    app.add_api_route("/appleid/button/logo", button("logo"), methods=["GET"])

    from .jsapi import jsapi_router

    app.include_router(jsapi_router(state, templates))

    if control_api:
        from .control import control_router

        app.include_router(control_router(state, notifier, faults))
    return app


def _consent_account(state: EmulatorState, form: Mapping[str, str]) -> Account:
    choice = form.get("account", "")
    if choice == "new":
        return state.create_account(
            email=form.get("new_email", ""),
            first_name=form.get("first_name", ""),
            last_name=form.get("last_name", ""),
        )
    account = state.find_account(choice)
    if account is None:
        raise StateError("Choose an Apple ID.")
    return account
