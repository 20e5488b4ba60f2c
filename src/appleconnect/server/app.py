"""The app factory: ``create_app(settings)`` builds a new FastAPI app with its own lifespan.

Routes are thin: they read and validate parameters, then call the data functions in
:mod:`.store` and the pipeline in :mod:`.signin`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appleconnect import InvalidAuthorizationResponse
from appleconnect import parse_authorization_response as parse_apple_response

from . import store
from .admin import auth as admin_auth
from .admin import install as install_admin
from .errors import ServiceError, error_body, invalid
from .models import User
from .params import bearer_or_param, read_params, required
from .ratelimit import rate_limited
from .settings import Settings
from .signin import (
    Service,
    SignInResult,
    close_service,
    delete_account,
    handle_notification,
    open_service,
    sign_in_with_code,
    sign_in_with_refresh_token,
    unverified_claims,
)

__all__ = ["create_app"]

log = logging.getLogger("appleconnect.server")
TEMPLATES = Path(__file__).parent / "templates"
HANDOFF_MAX_AGE = 120
_NEXT_MAX = 512


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before a handler reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ServiceError(
                        "payload_too_large", "The request body is too large.", status=413
                    )
            return message

        await self.app(scope, limited, send)


NOT_CONFIGURED_PATHS = ("/api/", "/auth/apple/")


class NotConfiguredGate:
    """Answer ``not_configured`` (503) on the sign-in paths while Apple settings are missing.

    A production service may start without Apple credentials and get them from the admin panel;
    until then the REST API and the web flow say so, and everything else (the admin panel
    first) works. ``respond`` renders the error as JSON or as a page, like every other error.
    """

    def __init__(self, app: ASGIApp, respond: Callable[[Request, ServiceError], Response]) -> None:
        self.app = app
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(NOT_CONFIGURED_PATHS):
            service: Service | None = getattr(scope["app"].state, "service", None)
            if service is not None and service.apple.missing:
                error = ServiceError(
                    "not_configured",
                    "Sign in with Apple is not set up on this service yet; the administrator "
                    "enters the Apple settings in the admin panel.",
                    status=503,
                )
                await self.respond(Request(scope), error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        error_body("payload_too_large", "The request body is too large."), status_code=413
    )
    await response(scope, receive, send)


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _settings(request: Request) -> Settings:
    """The settings in force now: the admin panel swaps in a new object when it changes one."""
    return _service(request).settings


def _api_routes(path: str, methods: list[str]) -> list[tuple[str, str, str, bool]]:
    """``(path, method, operation_id, in_schema)``: every method, with and without a slash."""
    name = path.rsplit("/", 1)[-1]
    return [
        (p, method, f"{name}_{method.lower()}", not p.endswith("/"))
        for method in methods
        for p in (path, path + "/")
    ]


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "error", "message"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "error": {"type": "string", "description": "a code listed in docs/service.md"},
        "message": {"type": "string", "description": "one sentence, safe to show"},
        "field": {"type": "string", "description": "the parameter at fault, if one is"},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


ERROR_RESPONSES: dict[str, Any] = {
    "400": _error("A parameter is missing or invalid, or Apple refused the code or token."),
    "401": _error("The API key, session, id_token or refresh token is not valid."),
    "413": _error("The request body is too large."),
    "429": {
        **_error("Too many requests from this client IP or with this API key."),
        "headers": {
            "Retry-After": {
                "description": "Seconds until the limit's window ends.",
                "schema": {"type": "integer"},
            }
        },
    },
    "502": _error("Apple refused this service's credentials (the log says why)."),
    "503": _error(
        "Apple could not be reached (apple_unavailable), or the service's Apple settings are "
        "not set yet (not_configured)."
    ),
}
_OBJECT = {"type": "object", "additionalProperties": True}
SUCCESS_SCHEMAS: dict[str, dict[str, Any]] = {
    "apple_request_auth": {
        "type": "object",
        "required": ["status", "url", "state"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "url": {"type": "string", "description": "Apple's authorize URL"},
            "state": {"type": "string"},
        },
    },
    "apple_connect": {
        "type": "object",
        "required": ["status", "email", "cookie", "access_token", "id_token", "api_response"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "email": {"type": ["string", "null"]},
            "cookie": {"type": "string", "description": "the session token"},
            "access_token": {"type": ["string", "null"]},
            "id_token": {**_OBJECT, "description": "the verified claims"},
            "api_response": {
                "oneOf": [_OBJECT, {"type": "null"}],
                "description": "Apple's token response (null when no call to Apple was made)",
            },
        },
    },
    "validate_auth_cookie": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "valid": {"type": "boolean"},
            "user_id": {"type": "integer"},
        },
    },
    "get_currentuserinfo": {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ok"]}, "user": _OBJECT},
    },
    "logout": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}},
    "delete_account": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "deleted": {"type": "boolean"},
            "revoked_at_apple": {"type": "array", "items": {"type": "string"}},
            "revoke_failed": {"type": "array", "items": {"type": "string"}},
            "sessions_ended": {"type": "integer"},
        },
    },
}


def _openapi(
    params: Mapping[str, str], required_params: tuple[str, ...] = (), *, name: str
) -> dict[str, Any]:
    """Describe parameters that may come as a query string or as a form body, the answer,
    and the errors."""
    properties = {name: {"type": "string", "description": text} for name, text in params.items()}
    schema = {"type": "object", "properties": properties, "required": list(required_params)}
    return {
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": SUCCESS_SCHEMAS[name]}},
            },
            **ERROR_RESPONSES,
        },
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": text,
            }
            for name, text in params.items()
        ],
        "requestBody": {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "application/json": {"schema": schema},
            },
        },
    }


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


def _user_info(user: User) -> dict[str, Any]:
    name = " ".join(p for p in (user.first_name, user.last_name) if p) or None
    return {
        "id": user.id,
        "sub": user.sub,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": name,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "role": user.role,
        "is_private_email": user.is_private_email,
        "email_forwarding": user.email_forwarding,
        "created": user.created_at.isoformat(),
        "last_sign_in": user.last_sign_in_at.isoformat() if user.last_sign_in_at else None,
    }


def _connect_body(result: SignInResult) -> dict[str, Any]:
    """The seed's response shape, field by field."""
    return {
        "status": "ok",
        "email": result.user.email,
        "cookie": result.session_token,
        "access_token": result.token.access_token if result.token else None,
        "id_token": dict(result.claims),
        "api_response": dict(result.token.raw) if result.token else None,
    }


def create_app(
    settings: Settings,
    *,
    apple_transport: httpx.AsyncBaseTransport | None = None,
    outbound_transport: httpx.AsyncBaseTransport | None = None,
    migrate_on_start: bool = True,
    on_apple_settings_changed: Callable[[Settings], None] | None = None,
) -> FastAPI:
    """Build the Apple Connect service for ``settings``.

    ``apple_transport`` carries the service's calls to Apple (tests and sandbox mode pass the
    emulator's ASGI transport); ``outbound_transport`` carries POSTs to ``forward_uris``.
    ``on_apple_settings_changed`` is called with the new settings whenever the admin panel's
    Apple settings (redirect URI, client ids, credentials) take effect in this process,
    including the first time the stored ones are applied after start.

    ``settings`` are the ones the process starts with; routes read ``Service.settings``, which
    the admin panel replaces with a new object when it changes a setting.
    """
    # Apple credentials may be missing: the admin panel can provide them later (NotConfiguredGate).
    settings.validate(apple=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await open_service(
            settings,
            apple_transport=apple_transport,
            outbound_transport=outbound_transport,
            migrate_on_start=migrate_on_start,
        )
        app.state.service = service
        try:
            yield
        finally:
            await close_service(service)

    app = FastAPI(
        title="Apple Connect",
        version="1",
        summary="Accounts and sessions from Sign in with Apple, for web and native apps.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    templates = Jinja2Templates(directory=str(TEMPLATES))
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    def wants_json(request: Request) -> bool:
        path = request.url.path
        if path.startswith("/api") or path.startswith("/auth/apple/notifications"):
            return True
        # Pages answer browsers with HTML; a client asking for JSON only gets JSON.
        accept = request.headers.get("accept", "")
        return "application/json" in accept and "text/html" not in accept

    def error_response(request: Request, exc: ServiceError) -> Response:
        if wants_json(request):
            return JSONResponse(
                error_body(exc.code, exc.message, exc.field),
                status_code=exc.status,
                headers=exc.headers,
            )
        return templates.TemplateResponse(
            request,
            "error.html",
            {"message": exc.message},
            status_code=exc.status,
            headers=exc.headers,
        )

    # Added after BodyLimit, so it runs before it; the admin panel's settings middleware
    # (added last, by install_admin) runs before both, so a change made there counts at once.
    app.add_middleware(NotConfiguredGate, respond=error_response)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        loc = exc.errors()[0].get("loc", ()) if exc.errors() else ()
        field = str(loc[-1]) if loc else None
        return error_response(
            request, ServiceError("invalid_parameter", "A parameter is invalid.", field=field)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        messages = {404: "There is nothing at this address.", 405: "This method is not allowed."}
        return error_response(
            request,
            ServiceError(
                codes.get(exc.status_code, "http_error"),
                messages.get(exc.status_code, "The request failed."),
                status=exc.status_code,
            ),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(
            request,
            ServiceError("internal_error", "Something went wrong on our side.", status=500),
        )

    def client_host(request: Request) -> str | None:
        # Behind a proxy, uvicorn's --forwarded-allow-ips makes this the real client.
        return request.client.host if request.client else None

    async def limit_ip(service: Service, request: Request) -> None:
        """Count the request against its client IP (shared by all processes), or raise 429."""
        host = client_host(request)
        if service.limiter.ip_bucket(host) is None:
            return
        async with service.sessions() as db:
            wait = await service.limiter.hit_ip(db=db, host=host)
            await db.commit()
        if wait is not None:
            raise rate_limited(wait)

    async def require_key(service: Service, values: dict[str, str], request: Request) -> None:
        """Check the API key, counting the request against the client IP and the key.

        The IP is counted first and also for a wrong key, which caps key guessing. Counting,
        the key lookup and its last-used time share one short transaction.
        """
        raw = values.get("key", "")
        limiter = service.limiter
        async with service.sessions() as db:
            wait = await limiter.hit_ip(db=db, host=client_host(request))
            key = None if wait is not None or not raw else await store.check_api_key(db=db, raw=raw)
            key_wait = None if key is None else await limiter.hit_key(db=db, key_id=key.id)
            await db.commit()
        if wait is not None:
            raise rate_limited(wait)
        if key_wait is not None:
            raise rate_limited(key_wait, field="key")
        if not raw:
            raise ServiceError(
                "missing_parameter", "The parameter 'key' is required.", status=401, field="key"
            )
        if key is None:
            raise ServiceError(
                "invalid_key", "The API key is invalid or revoked.", status=401, field="key"
            )

    async def current_user(service: Service, token: str) -> User:
        async with service.sessions() as db:
            user = await store.session_user(db=db, raw=token)
        if user is None:
            raise ServiceError(
                "invalid_cookie",
                "The session is invalid or has expired.",
                status=401,
                field="cookie",
            )
        return user

    def pick_client_id(settings: Settings, values: dict[str, str]) -> str:
        audiences = settings.audiences
        if values.get("client_id"):
            if values["client_id"] not in audiences:
                raise invalid("client_id", "The client_id is not one this service accepts.")
            return values["client_id"]
        aud = unverified_claims(values.get("id_token")).get("aud")
        if isinstance(aud, str) and aud in audiences:
            return aud
        return settings.app_ids[0] if settings.app_ids else settings.client_id

    # --- REST API ---------------------------------------------------------------------------

    async def apple_request_auth(request: Request) -> Response:
        service = _service(request)
        settings = service.settings
        values = await read_params(request)
        await require_key(service, values, request)
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
                raise invalid(
                    name, f"The service makes the {name} itself and keeps it server-side."
                )
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

    for path, method, op_id, in_schema in _api_routes("/api/apple_request_auth", ["GET", "POST"]):
        app.add_api_route(
            path,
            apple_request_auth,
            methods=[method],
            operation_id=op_id,
            include_in_schema=in_schema,
            summary="Make an authorization URL with server-side state",
            openapi_extra=_openapi(
                {"key": "API key", "redirect_uri": "one of app_redirect_uris"},
                ("key",),
                name="apple_request_auth",
            ),
        )

    async def apple_connect(request: Request) -> Response:
        service = _service(request)
        settings = service.settings
        values = await read_params(request)
        await require_key(service, values, request)
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
            code = required(values, "code")
            try:
                parsed = parse_apple_response(
                    {k: values[k] for k in ("code", "id_token", "user") if k in values}
                )
            except InvalidAuthorizationResponse as exc:
                raise invalid(exc.field, str(exc)) from exc
            nonce = values.get("nonce") or None
            exchange_redirect: str | None = None
            if values.get("state"):
                async with service.sessions() as db:
                    try:
                        pending = await store.consume_auth_request(
                            db=db, state=values["state"], kind="api"
                        )
                    except store.StateError as exc:
                        raise _state_error(exc) from exc
                    await db.commit()
                if nonce is not None:
                    raise invalid("nonce", "With a state, the service uses the nonce it issued.")
                nonce, client_id = pending.nonce, pending.client_id
                exchange_redirect = pending.redirect_uri
            else:
                client_id = pick_client_id(settings, values)
                if client_id == settings.client_id:
                    exchange_redirect = (
                        settings.app_redirect_uris or (settings.effective_redirect_uri,)
                    )[0]
            name = parsed.user
            result = await sign_in_with_code(
                service=service,
                code=code,
                client_id=client_id,
                redirect_uri=exchange_redirect,
                nonce=nonce,
                id_token_hint=parsed.id_token,
                first_name=name.first_name if name else None,
                last_name=name.last_name if name else None,
                open_session=True,
            )
        body = _connect_body(result)
        if forward:
            service.spawn(_forward(service, forward, body))
        return JSONResponse(body)

    for path, method, op_id, in_schema in _api_routes("/api/apple_connect", ["POST"]):
        app.add_api_route(
            path,
            apple_connect,
            methods=[method],
            operation_id=op_id,
            include_in_schema=in_schema,
            summary="Sign in with an authorization code (or a refresh token)",
            openapi_extra=_openapi(
                {
                    "key": "API key",
                    "code": "Apple's authorization code",
                    "state": "the state from apple_request_auth",
                    "redirect_uri": "one of forward_uris: also receives the result by POST",
                    "id_token": "the id_token the app received from Apple",
                    "nonce": "the raw nonce the app sent (native flows)",
                    "user": "Apple's first-login user JSON",
                    "refresh_token": "validate a stored refresh token instead of a code",
                    "client_id": "which configured client id the code was issued to",
                },
                ("key",),
                name="apple_connect",
            ),
        )

    def cookie_route(
        path: str,
        methods: list[str],
        handler: Callable[[Service, User, str], Awaitable[dict[str, Any]]],
        summary: str,
    ) -> None:
        async def endpoint(request: Request) -> Response:
            service = _service(request)
            await limit_ip(service, request)
            values = await read_params(request)
            token = bearer_or_param(request, values)
            user = await current_user(service, token)
            return JSONResponse({"status": "ok", **await handler(service, user, token)})

        for p, method, op_id, in_schema in _api_routes(path, methods):
            app.add_api_route(
                p,
                endpoint,
                methods=[method],
                operation_id=op_id,
                include_in_schema=in_schema,
                summary=summary,
                openapi_extra=_openapi(
                    {"cookie": "the session (or Authorization: Bearer)"},
                    name=path.rsplit("/", 1)[-1],
                ),
            )

    async def validate(_s: Service, user: User, _t: str) -> dict[str, Any]:
        return {"valid": True, "user_id": user.id}

    async def userinfo(_s: Service, user: User, _t: str) -> dict[str, Any]:
        return {"user": _user_info(user)}

    async def logout(service: Service, user: User, token: str) -> dict[str, Any]:
        async with service.sessions() as db:
            await store.end_session(db=db, raw=token)
            await store.audit(db=db, event="session.ended", actor="user", sub=user.sub)
            await db.commit()
        return {}

    async def delete(service: Service, user: User, _t: str) -> dict[str, Any]:
        report = await delete_account(service=service, user_id=user.id, actor="user")
        return {
            "deleted": True,
            "revoked_at_apple": report.revoked,
            "revoke_failed": report.revoke_failed,
            "sessions_ended": report.sessions_ended,
        }

    cookie_route("/api/validate_auth_cookie", ["GET", "POST"], validate, "Check a session")
    cookie_route("/api/get_currentuserinfo", ["GET", "POST"], userinfo, "The signed-in user")
    cookie_route("/api/logout", ["POST"], logout, "End the session")
    cookie_route("/api/delete_account", ["POST"], delete, "Revoke at Apple and delete the user")

    # --- web flow ---------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request, signin: str | None = None) -> Response:
        service = _service(request)
        settings = service.settings
        user = None
        token = request.cookies.get(settings.cookie_name)
        if token:
            async with service.sessions() as db:
                user = await store.session_user(db=db, raw=token)
        messages = {
            "cancelled": "Sign in with Apple was cancelled.",
            "signed_out": "You are signed out.",
            "deleted": "Your account was deleted.",
        }
        return templates.TemplateResponse(
            request,
            "index.html",
            {
                "user": user,
                "message": messages.get(signin or ""),
                "sandbox": settings.sandbox,
                "apple_base_url": settings.apple_base_url,
            },
        )

    web_errors: dict[int | str, dict[str, Any]] = {
        "303": {"description": "Redirect (to Apple, to the finishing page, or to next)."},
        "400": {"description": "A bad parameter or state (an HTML page)."},
        "429": ERROR_RESPONSES["429"],
    }

    @app.get("/auth/apple/start", summary="Start a web sign-in", responses=web_errors)
    async def start(request: Request, next: str | None = None) -> Response:
        service = _service(request)
        settings = service.settings
        await limit_ip(service, request)
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

    @app.post("/auth/apple/callback", summary="Apple's form_post", responses=web_errors)
    async def callback(request: Request) -> Response:
        # Apple's POST is cross-site: no Lax cookie arrives, so everything is looked up from
        # the state in the body (field notes P2).
        service = _service(request)
        await limit_ip(service, request)
        form = await request.form(max_files=0, max_fields=20)
        try:
            response = parse_apple_response(
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
                payload = {"code": response.code, "state": response.state}
                if response.id_token:
                    payload["id_token"] = response.id_token
                user_field = form.get("user")
                if isinstance(user_field, str):
                    payload["user"] = user_field
                return templates.TemplateResponse(request, "handoff.html", {"payload": payload})
            try:
                pending = await store.consume_auth_request(db=db, state=response.state, kind="web")
            except store.StateError as exc:
                raise _state_error(exc) from exc
            await db.commit()
        if response.error:
            if response.cancelled:
                return RedirectResponse(
                    _with_query(pending.next_path, signin="cancelled"), status_code=303
                )
            log.warning("Apple returned error %r to the callback", response.error)
            raise ServiceError("apple_error", "Sign in with Apple did not complete.")
        assert response.code is not None
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

    @app.get("/auth/apple/finish", include_in_schema=False)
    async def finish(request: Request, handoff: str = "") -> Response:
        service = _service(request)
        settings = service.settings
        async with service.sessions() as db:
            pending = await store.consume_handoff(db=db, raw=handoff, max_age=HANDOFF_MAX_AGE)
            if pending is None or pending.user_id is None:
                raise ServiceError(
                    "invalid_handoff", "This sign-in link was already used or has expired."
                )
            token = await store.create_session(
                db=db, user_id=pending.user_id, ttl=settings.session_ttl
            )
            await db.commit()
        response = RedirectResponse(pending.next_path or "/", status_code=303)
        response.set_cookie(
            settings.cookie_name,
            token,
            max_age=settings.session_ttl,
            httponly=True,
            secure=settings.cookie_secure,
            samesite="lax",
            path="/",
        )
        return response

    def same_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        # Unlike the admin panel, the web flow lets "Origin: null" through.
        if origin != "null" and not admin_auth.same_origin(
            _settings(request), origin, request.headers.get("host")
        ):
            raise ServiceError("forbidden", "Cross-site request refused.", status=403)

    @app.post("/auth/logout", include_in_schema=False)
    async def web_logout(request: Request) -> Response:
        same_origin(request)
        service = _service(request)
        settings = service.settings
        token = request.cookies.get(settings.cookie_name)
        if token:
            async with service.sessions() as db:
                await store.end_session(db=db, raw=token)
                await db.commit()
        response = RedirectResponse("/?signin=signed_out", status_code=303)
        response.delete_cookie(settings.cookie_name, path="/")
        return response

    @app.post("/auth/delete", include_in_schema=False)
    async def web_delete(request: Request) -> Response:
        same_origin(request)
        service = _service(request)
        settings = service.settings
        user = await current_user(service, request.cookies.get(settings.cookie_name, ""))
        await delete_account(service=service, user_id=user.id, actor="user")
        response = RedirectResponse("/?signin=deleted", status_code=303)
        response.delete_cookie(settings.cookie_name, path="/")
        return response

    @app.post(
        "/auth/apple/notifications",
        summary="Apple's server-to-server notifications",
        responses={
            "400": ERROR_RESPONSES["400"] | {"description": "Forged or malformed."},
            "503": ERROR_RESPONSES["503"] | {"description": "Apple's keys unavailable."},
        },
    )
    async def notifications(request: Request) -> Response:
        service = _service(request)
        body = await request.body()
        event, applied = await handle_notification(service=service, body=body)
        return JSONResponse({"status": "ok", "event": event, "duplicate": not applied})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    install_admin(
        app,
        settings,
        apple_transport=apple_transport,
        on_apple_settings_changed=on_apple_settings_changed,
    )
    return app


def _state_error(exc: store.StateError) -> ServiceError:
    messages = {
        "unknown": "The sign-in state is not one this service issued; start again.",
        "used": "This sign-in was already completed; start again.",
        "expired": "The sign-in took too long and expired; start again.",
    }
    return ServiceError(
        f"state_{exc.reason}" if exc.reason != "unknown" else "invalid_state",
        messages[exc.reason],
        field="state",
    )


async def _forward(service: Service, url: str, body: Mapping[str, Any]) -> None:
    """POST the sign-in result to an allow-listed ``redirect_uri`` (the seed's behaviour)."""
    try:
        response = await service.outbound.post(
            url, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        log.info("forwarded a sign-in to %s: HTTP %s", url, response.status_code)
    except httpx.HTTPError as exc:
        log.warning("forwarding a sign-in to %s failed: %s", url, exc)
