"""The admin panel's pages: server-rendered HTML forms, usable without JavaScript.

Every page needs an admin session (see :mod:`.auth`); every POST checks the CSRF token and the
origin, and every change is written to the audit log with ``actor="admin"``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import smtplib
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Select, func, or_, select
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from appleconnect import (
    AppleConnectError,
    AppleUnavailable,
    ClientSecret,
    InvalidClient,
    InvalidGrant,
)
from appleconnect._doctor import (
    SECRET_EXPIRY_WARNING,
    Check,
    decode_unverified,
    redirect_uri_problem,
    run_checks,
)
from appleconnect._secret import load_private_key, validate_client_id, validate_team_or_key_id
from appleconnect.buttons import LOCALES

from .. import store
from ..errors import ServiceError
from ..mail import _send
from ..models import AuditEvent, OutboxMail, User, utcnow
from ..settings import Secret, Settings, SettingsError
from ..signin import Service, delete_account
from . import auth, runtime
from .buttons import BUTTON_FIELDS, SnippetOptions, snippets

__all__ = ["admin_router", "templates"]

log = logging.getLogger("appleconnect.server.admin")
T = TypeVar("T")
TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))

MAX_KEY_BYTES = 16_384
MAX_FORM_FIELDS = 40
PAGE_SIZE = 100
_ANY_ID = "AAAAAAAAAA"  # a well-formed Team ID/Key ID, for key_facts

# The usual causes of invalid_client, most likely first (field notes P1, P11, P13).
INVALID_CLIENT_CAUSES = (
    "The private key and the Key ID do not belong together (with several keys in one account, "
    "the .p8 file of one key and the Key ID of another is the most common mistake).",
    "The Team ID is not the team that owns the key (it is the 10 characters at the top right "
    "of the developer account, not an App ID prefix of another team).",
    "The Client ID is the App ID where the web flow needs the Services ID (or the other way "
    "round), or it differs in case from the registered identifier.",
    "The client secret has expired (at most six months) or was pasted incompletely.",
    "The server's clock is wrong, so the secret looks issued in the future or already expired.",
)

MESSAGES = {
    "saved": "Saved. The change applies now, in every process, without a restart.",
    "role": "The role was changed.",
    "deleted": "The user was deleted.",
    "revoked": "The API key was revoked.",
    "signed_out": "You are signed out of the admin panel.",
}


class AdminRequired(Exception):
    """Raised when a page is requested without a valid admin session."""


class Forbidden(Exception):
    """Raised when a form arrives without its CSRF token or from another origin."""


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _runtime(request: Request) -> runtime.Runtime:
    rt: runtime.Runtime = request.app.state.admin_runtime
    return rt


def _when(value: datetime | float | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["when"] = _when


def page(
    request: Request, name: str, context: Mapping[str, Any], *, status: int = 200
) -> HTMLResponse:
    """Render an admin page with the things every page needs (CSRF token, nonce, mode)."""
    nonce = secrets.token_urlsafe(12)
    settings: Settings = _service(request).settings
    response = templates.TemplateResponse(
        request,
        name,
        {
            "csrf": request.state.admin_csrf if hasattr(request.state, "admin_csrf") else "",
            "nonce": nonce,
            "settings": settings,
            "sandbox": settings.sandbox,
            "apple_missing": _service(request).apple.missing,
            "message": MESSAGES.get(request.query_params.get("done", "")),
            **context,
        },
        status_code=status,
    )
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; connect-src 'self'; "
        f"script-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    )
    response.headers["Cache-Control"] = "no-store"
    # "same-origin" rather than "no-referrer": with no referrer, browsers send "Origin: null" on
    # form posts, and the origin check would refuse the panel's own forms.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def _require_admin(request: Request) -> str:
    raw = request.cookies.get(auth.ADMIN_COOKIE, "")
    if not raw:
        raise AdminRequired
    async with _service(request).sessions() as db:
        if not await auth.valid_admin_session(db=db, raw=raw):
            raise AdminRequired
    request.state.admin_csrf = auth.csrf_token(raw)
    return raw


async def _form(request: Request, *, files: int = 0) -> FormData:
    """The POSTed form of an admin page, after the session, origin and CSRF checks."""
    raw = await _require_admin(request)
    settings = _service(request).settings
    if not auth.same_origin(settings, request.headers.get("origin"), request.headers.get("host")):
        raise Forbidden
    form = await request.form(max_files=files, max_fields=MAX_FORM_FIELDS)
    token = form.get("csrf")
    if not isinstance(token, str) or not auth.check_csrf(raw, token):
        raise Forbidden
    return form


async def _rows(request: Request, query: Select[T]) -> Sequence[T]:
    """The rows of a read-only query, in a short session of their own."""
    async with _service(request).sessions() as db:
        return (await db.scalars(query)).all()


def _text(form: FormData, name: str, limit: int = 2048) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value.strip()[:limit]


async def _audit(
    request: Request, event: str, *, sub: str | None = None, detail: Mapping[str, Any]
) -> None:
    async with _service(request).sessions() as db:
        await store.audit(db=db, event=event, actor="admin", sub=sub, detail=detail)
        await db.commit()


async def _save(
    request: Request, changes: Mapping[str, Any], *, remove: tuple[str, ...] = (), event: str
) -> None:
    """Store settings, apply them in this process now, and record the change (names only for
    secrets)."""
    service = _service(request)
    rt = _runtime(request)
    shown = {
        k: ("(secret)" if runtime.EDITABLE.get(k, False) else v)
        for k, v in changes.items()
        if not isinstance(v, Secret) or k != "client_secret" or v
    }
    async with service.sessions() as db:
        await runtime.save(db=db, encryptor=service.encryptor, changes=changes, remove=remove)
        await store.audit(
            db=db,
            event=event,
            actor="admin",
            detail={"changed": shown, "reset": list(remove)},
        )
        await db.commit()
    await rt.refresh(service, force=True)


# --- Apple settings --------------------------------------------------------------------------


def key_facts(pem: str) -> dict[str, str] | None:
    """Fingerprint and curve of the configured key (the key itself is never shown)."""
    if not pem:
        return None
    try:
        # The fingerprint depends on the key alone, so placeholder ids let it show even while
        # the Team ID, Key ID or Client ID are still missing or wrong.
        fingerprint = ClientSecret(_ANY_ID, _ANY_ID, "key.fingerprint", pem).fingerprint
    except (ValueError, TypeError) as exc:
        return {"fingerprint": "", "curve": "", "error": str(exc)}
    # load_private_key (in ClientSecret) accepts P-256 keys only.
    return {"fingerprint": fingerprint, "curve": "P-256 (secp256r1)", "error": ""}


def secret_facts(service: Service, settings: Settings) -> dict[str, Any]:
    """How the client secret is made and when the current one expires."""
    now = time.time()
    if settings.client_secret:
        try:
            _header, claims, _sig = decode_unverified(settings.client_secret.get())
            exp = claims.get("exp")
        except ValueError:
            exp = None
        expires = exp if isinstance(exp, int) else None
        return {
            "mode": "pasted",
            "expires": expires,
            "warning": expires is not None and expires - now < SECRET_EXPIRY_WARNING,
            "expired": expires is not None and expires <= now,
        }
    expires = None
    try:
        minted = service.apple.client(settings.client_id).client_secret
        expires = minted.expires_at if isinstance(minted, ClientSecret) else None
    except (KeyError, ValueError, TypeError):
        expires = None
    return {"mode": "auto", "expires": expires, "warning": False, "expired": False}


def _apple_context(request: Request) -> dict[str, Any]:
    service = _service(request)
    rt = _runtime(request)
    s = service.settings
    try:
        pem = s.private_key_pem()
    except SettingsError:
        pem = ""
    strict = redirect_uri_problem(s.effective_redirect_uri)
    return {
        "rt": rt,
        "key": key_facts(pem),
        "secret": secret_facts(service, s),
        "redirect_strict_problem": strict,
        "notification_url": s.notification_url,
        "errors": {},
        "values": {
            "redirect_uri": s.redirect_uri,
            "client_id": s.client_id,
            "app_ids": "\n".join(s.app_ids),
            "team_id": s.team_id,
            "key_id": s.key_id,
            "secret_mode": "pasted" if s.client_secret else "auto",
        },
    }


async def _read_key_upload(form: FormData) -> tuple[str, str | None]:
    """The pasted or uploaded .p8 text, or ``("", error)``."""
    upload = form.get("private_key_file")
    if isinstance(upload, UploadFile) and upload.filename:
        try:
            data = await upload.read(MAX_KEY_BYTES + 1)
        finally:
            await form.close()
        if len(data) > MAX_KEY_BYTES:
            return "", "The uploaded file is too large to be a .p8 key."
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            return "", "The uploaded file is not a text .p8 key."
    await form.close()
    return _text(form, "private_key", MAX_KEY_BYTES), None


async def _apple_post(request: Request) -> Response:
    form = await _form(request, files=1)
    rt = _runtime(request)
    s = _service(request).settings
    errors: dict[str, str] = {}
    notes: list[str] = []
    changes: dict[str, Any] = {}

    redirect_uri = _text(form, "redirect_uri")
    if redirect_uri:
        problem = redirect_uri_problem(redirect_uri, sandbox=s.sandbox)
        strict = redirect_uri_problem(redirect_uri)
        if problem:
            errors["redirect_uri"] = f"Apple would refuse this redirect URI: {problem}."
        elif strict:
            notes.append(
                "Redirect URI accepted because this is sandbox mode; Apple would refuse it: "
                f"{strict}."
            )
    team_id = _text(form, "team_id", 64)
    key_id = _text(form, "key_id", 64)
    for name, value, what in (("team_id", team_id, "Team ID"), ("key_id", key_id, "Key ID")):
        if value:
            try:
                validate_team_or_key_id(value, what)
            except (ValueError, TypeError) as exc:
                errors[name] = str(exc)
    client_id = _text(form, "client_id", 255)
    if client_id:
        try:
            validate_client_id(client_id, team_id or None)
        except (ValueError, TypeError) as exc:
            errors["client_id"] = str(exc)
    app_ids = tuple(
        dict.fromkeys(
            v.strip() for v in _text(form, "app_ids", 4096).replace(",", "\n").splitlines()
        )
    )
    app_ids = tuple(v for v in app_ids if v)
    for app_id in app_ids:
        try:
            validate_client_id(app_id, team_id or None)
        except (ValueError, TypeError) as exc:
            errors["app_ids"] = f"{app_id}: {exc}"
    pem, upload_error = await _read_key_upload(form)
    if upload_error:
        errors["private_key"] = upload_error
    elif pem:
        try:
            load_private_key(pem)
        except (ValueError, TypeError) as exc:
            errors["private_key"] = str(exc)

    mode = _text(form, "secret_mode", 16)
    pasted = "".join(_text(form, "client_secret", 8192).split())
    if mode == "pasted":
        if not pasted and not s.client_secret:
            errors["client_secret"] = "Paste the client secret, or choose automatic."  # noqa: S105
        elif pasted:
            checks = run_checks(
                team_id=team_id or None,
                key_id=key_id or None,
                client_ids=[client_id] if client_id else [],
                client_secret=pasted,
                sandbox=s.sandbox,
            )
            verdict = next(c for c in checks if c.name == "pasted client secret")
            if not verdict.ok:
                errors["client_secret"] = f"Refused: the client secret is {verdict.detail}."
            elif verdict.warning:
                notes.append(f"The pasted client secret is {verdict.detail}: make a new one soon.")
    elif mode != "auto":
        errors["secret_mode"] = "Choose how the client secret is made."  # noqa: S105

    values = {
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "app_ids": "\n".join(app_ids),
        "team_id": team_id,
        "key_id": key_id,
        "secret_mode": mode,
    }
    if not errors:
        changes.update(
            redirect_uri=redirect_uri,
            client_id=client_id,
            app_ids=app_ids,
            team_id=team_id,
            key_id=key_id,
        )
        changes = {k: v for k, v in changes.items() if getattr(s, k) != v}
        if pem:
            changes["private_key"] = Secret(pem)
        if mode == "auto" and s.client_secret:
            changes["client_secret"] = Secret("")
        elif mode == "pasted" and pasted:
            changes["client_secret"] = Secret(pasted)
        try:
            rt.candidate(changes)
        except SettingsError as exc:
            errors["form"] = str(exc)
    if errors:
        context = _apple_context(request)
        context.update(errors=errors, values=values, notes=notes)
        return page(request, "apple.html", context, status=400)
    if changes:
        await _save(request, changes, event="admin.apple_settings_changed")
    context = _apple_context(request)
    context.update(notes=notes, saved=bool(changes))
    return page(request, "apple.html", context)


# --- Verify settings -------------------------------------------------------------------------


async def verify_settings(service: Service, settings: Settings) -> dict[str, Any]:
    """The offline checks of ``appleconnect doctor``, then one token call with a dummy code."""
    try:
        pem = settings.private_key_pem()
    except SettingsError as exc:
        pem = ""
        offline = [Check("private key", False, str(exc))]
    else:
        offline = []
    offline += run_checks(
        team_id=settings.team_id or None,
        key_id=settings.key_id or None,
        client_ids=settings.audiences if settings.client_id else (),
        private_key=pem or None,
        redirect_uris=(settings.effective_redirect_uri, *settings.app_redirect_uris),
        client_secret=settings.client_secret.get() or None,
        sandbox=settings.sandbox,
    )
    live: dict[str, Any] = {"ok": False, "answer": "", "detail": "", "causes": ()}
    try:
        await service.apple.exchange_code(
            client_id=settings.client_id,
            code="appleconnect-verify-" + secrets.token_hex(8),
            redirect_uri=settings.effective_redirect_uri,
        )
    except InvalidGrant as exc:
        live.update(
            ok=True,
            answer="invalid_grant",
            detail="Apple accepted the client id and the client secret (it refused only the "
            "dummy code, as it should).",
            apple=exc.error_description or "",
        )
    except InvalidClient as exc:
        live.update(
            answer="invalid_client",
            detail="Apple did not accept the client id and client secret.",
            apple=exc.error_description or "",
            causes=INVALID_CLIENT_CAUSES,
        )
    except AppleUnavailable as exc:
        live.update(answer="unreachable", detail=f"Apple could not be reached: {exc}")
    except AppleConnectError as exc:
        error = getattr(exc, "error", type(exc).__name__)
        live.update(answer=str(error), detail=str(exc))
    except (KeyError, ValueError, TypeError) as exc:
        live.update(answer="not configured", detail=f"No client for the Client ID: {exc}")
    passed = live["ok"] and all(c.ok for c in offline)
    return {"offline": offline, "live": live, "passed": passed}


# --- user import and mail --------------------------------------------------------------------


def _import_context(request: Request) -> dict[str, Any]:
    s = _service(request).settings
    return {
        "rt": _runtime(request),
        "errors": {},
        "values": {
            "default_role": s.default_role,
            "welcome_email": s.welcome_email,
            "mail_from": s.mail_from,
            "welcome_subject": s.welcome_subject,
            "smtp_host": s.smtp_host,
            "smtp_port": str(s.smtp_port),
            "smtp_security": s.smtp_security,
            "smtp_username": s.smtp_username,
        },
        "has_password": bool(s.smtp_password),
        "test_result": None,
    }


async def _import_post(request: Request) -> Response:
    form = await _form(request)
    rt = _runtime(request)
    s = _service(request).settings
    errors: dict[str, str] = {}
    values = {
        "default_role": _text(form, "default_role", 64),
        "welcome_email": form.get("welcome_email") == "on",
        "mail_from": _text(form, "mail_from", 320),
        "welcome_subject": _text(form, "welcome_subject", 200) or "Welcome",
        "smtp_host": _text(form, "smtp_host", 255),
        "smtp_port": _text(form, "smtp_port", 8) or "587",
        "smtp_security": _text(form, "smtp_security", 16),
        "smtp_username": _text(form, "smtp_username", 255),
    }
    if values["default_role"] not in s.roles:
        errors["default_role"] = f"Choose one of the roles: {', '.join(s.roles)}."
    port = str(values["smtp_port"])
    if not port.isdigit() or not 0 < int(port) < 65536:
        errors["smtp_port"] = "The port is a number from 1 to 65535."
    if values["smtp_security"] not in ("starttls", "tls", "none"):
        errors["smtp_security"] = "Choose STARTTLS, TLS or none."
    mail_from = str(values["mail_from"])
    if mail_from and ("@" not in mail_from or any(c.isspace() for c in mail_from)):
        errors["mail_from"] = "The sender must be an email address."
    changes: dict[str, Any] = {}
    if not errors:
        changes = {k: v for k, v in values.items() if k != "smtp_port"}
        changes["smtp_port"] = int(port)
        changes = {k: v for k, v in changes.items() if getattr(s, k) != v}
        password = form.get("smtp_password")
        if form.get("clear_smtp_password") == "on":
            changes["smtp_password"] = Secret("")
        elif isinstance(password, str) and password:
            changes["smtp_password"] = Secret(password[:512])
        try:
            rt.candidate(changes)
        except SettingsError as exc:
            errors["form"] = str(exc)
    if errors:
        context = _import_context(request)
        context.update(errors=errors, values=values)
        return page(request, "import.html", context, status=400)
    if changes:
        await _save(request, changes, event="admin.user_import_changed")
    return RedirectResponse("/admin/import?done=saved", status_code=303)


async def send_test_email(service: Service, settings: Settings, to: str) -> tuple[bool, str]:
    """Send one test message now; without an SMTP host it goes to the outbox."""
    mail = OutboxMail(
        to_address=to,
        subject="Apple Connect test email",
        body=f"This is a test email from the Apple Connect service at {settings.public_url}.\n",
        created_at=utcnow(),
        status="outbox",
        attempts=1,
    )
    if not settings.smtp_host:
        async with service.sessions() as db:
            db.add(mail)
            await db.commit()
        return True, "No SMTP host is set: the test email was put in the outbox."
    if not settings.mail_from:
        return False, "Set the sender address (From) first."
    try:
        await asyncio.to_thread(_send, settings, mail)
    except (OSError, smtplib.SMTPException) as exc:
        return False, f"Sending failed: {exc}"
    return True, f"Sent to {to} through {settings.smtp_host}:{settings.smtp_port}."


# --- the router ------------------------------------------------------------------------------


def admin_router() -> APIRouter:
    router = APIRouter(prefix="/admin", include_in_schema=False)

    @router.get("/login")
    async def login_page(request: Request, token: str = "") -> Response:
        return page(request, "login.html", {"token": token[:200], "error": None})

    @router.post("/login")
    async def login(request: Request) -> Response:
        service = _service(request)
        settings = service.settings
        if not auth.same_origin(
            settings, request.headers.get("origin"), request.headers.get("host")
        ):
            raise Forbidden
        form = await request.form(max_files=0, max_fields=5)
        token = form.get("token")
        async with service.sessions() as db:
            ok = isinstance(token, str) and await store.consume_admin_login(db=db, raw=token)
            if not ok:
                return page(
                    request,
                    "login.html",
                    {
                        "token": "",
                        "error": "This login link was already used or has expired. Make a new "
                        "one with `appleconnect admin login-link`.",
                    },
                    status=403,
                )
            session = await auth.create_admin_session(db=db)
            await store.audit(db=db, event="admin.signed_in", actor="admin", detail={})
            await db.commit()
        response = RedirectResponse("/admin", status_code=303)
        response.set_cookie(
            auth.ADMIN_COOKIE,
            session,
            max_age=auth.SESSION_TTL,
            httponly=True,
            secure=settings.cookie_secure,
            samesite="strict",
            path="/admin",
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        await _form(request)
        raw = request.cookies.get(auth.ADMIN_COOKIE, "")
        async with _service(request).sessions() as db:
            await auth.end_admin_session(db=db, raw=raw)
            await store.audit(db=db, event="admin.signed_out", actor="admin", detail={})
            await db.commit()
        response = RedirectResponse("/admin/login?done=signed_out", status_code=303)
        response.delete_cookie(auth.ADMIN_COOKIE, path="/admin")
        return response

    @router.get("")
    @router.get("/")
    async def overview(request: Request) -> Response:
        await _require_admin(request)
        service = _service(request)
        async with service.sessions() as db:
            users = await db.scalar(select(func.count()).select_from(User))
            keys = len([k for k in await store.list_api_keys(db=db) if k.revoked_at is None])
        return page(
            request,
            "overview.html",
            {
                "users": users or 0,
                "keys": keys,
                "secret": secret_facts(service, _service(request).settings),
            },
        )

    @router.get("/apple")
    async def apple_page(request: Request) -> Response:
        await _require_admin(request)
        return page(request, "apple.html", _apple_context(request))

    @router.post("/apple")
    async def apple_save(request: Request) -> Response:
        return await _apple_post(request)

    @router.get("/verify")
    async def verify_page(request: Request) -> Response:
        await _require_admin(request)
        return page(request, "verify.html", {"result": None})

    @router.post("/verify")
    async def verify(request: Request) -> Response:
        await _form(request)
        result = await verify_settings(_service(request), _service(request).settings)
        await _audit(
            request,
            "admin.settings_verified",
            detail={"passed": result["passed"], "apple_answer": result["live"]["answer"]},
        )
        return page(request, "verify.html", {"result": result})

    @router.get("/import")
    async def import_page(request: Request) -> Response:
        await _require_admin(request)
        return page(request, "import.html", _import_context(request))

    @router.post("/import")
    async def import_save(request: Request) -> Response:
        return await _import_post(request)

    @router.post("/import/test-email")
    async def test_email(request: Request) -> Response:
        form = await _form(request)
        to = _text(form, "to", 320)
        context = _import_context(request)
        if "@" not in to or any(c.isspace() for c in to):
            context["test_result"] = (False, "Give the address to send the test email to.")
            return page(request, "import.html", context, status=400)
        ok, detail = await send_test_email(_service(request), _service(request).settings, to)
        await _audit(request, "admin.test_email", detail={"to": to, "ok": ok})
        context["test_result"] = (ok, detail)
        return page(request, "import.html", context, status=200 if ok else 502)

    @router.get("/users")
    async def users_page(request: Request, q: str = "") -> Response:
        await _require_admin(request)
        q = q.strip()[:200]
        query = select(User).order_by(User.id.desc()).limit(PAGE_SIZE)
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                or_(
                    User.email.ilike(pattern, escape="\\"),
                    User.first_name.ilike(pattern, escape="\\"),
                    User.last_name.ilike(pattern, escape="\\"),
                    (
                        func.coalesce(User.first_name, "") + " " + func.coalesce(User.last_name, "")
                    ).ilike(pattern, escape="\\"),
                    User.sub == q,
                )
            )
        users = await _rows(request, query)
        return page(request, "users.html", {"users": users, "q": q, "report": None})

    @router.post("/users/{user_id}/role")
    async def change_role(request: Request, user_id: int) -> Response:
        form = await _form(request)
        role = _text(form, "role", 64)
        settings = _service(request).settings
        if role not in settings.roles:
            return page(request, "message.html", {"text": "Unknown role."}, status=400)
        async with _service(request).sessions() as db:
            user = await db.get(User, user_id)
            if user is None:
                return page(request, "message.html", {"text": "No such user."}, status=404)
            old, user.role = user.role, role
            await store.audit(
                db=db,
                event="admin.role_changed",
                actor="admin",
                sub=user.sub,
                detail={"from": old, "to": role},
            )
            await db.commit()
        return RedirectResponse("/admin/users?done=role", status_code=303)

    @router.post("/users/{user_id}/delete")
    async def delete_user(request: Request, user_id: int) -> Response:
        await _form(request)
        try:
            report = await delete_account(service=_service(request), user_id=user_id, actor="admin")
        except ServiceError:
            return page(request, "message.html", {"text": "No such user."}, status=404)
        return page(request, "users.html", {"users": [], "q": "", "report": report})

    @router.get("/apikeys")
    async def apikeys_page(request: Request) -> Response:
        await _require_admin(request)
        async with _service(request).sessions() as db:
            keys = await store.list_api_keys(db=db)
        return page(request, "apikeys.html", {"keys": keys, "new_key": None})

    @router.post("/apikeys")
    async def create_key(request: Request) -> Response:
        form = await _form(request)
        name = _text(form, "name", 100) or "unnamed"
        async with _service(request).sessions() as db:
            raw = await store.create_api_key(db=db, name=name)
            await store.audit(
                db=db, event="admin.apikey_created", actor="admin", detail={"name": name}
            )
            await db.commit()
            keys = await store.list_api_keys(db=db)
        return page(request, "apikeys.html", {"keys": keys, "new_key": raw})

    @router.post("/apikeys/{key_id}/revoke")
    async def revoke_key(request: Request, key_id: int) -> Response:
        await _form(request)
        async with _service(request).sessions() as db:
            done = await store.revoke_api_key(db=db, key_id=key_id)
            if done:
                await store.audit(
                    db=db, event="admin.apikey_revoked", actor="admin", detail={"id": key_id}
                )
            await db.commit()
        return RedirectResponse("/admin/apikeys?done=revoked", status_code=303)

    @router.get("/audit")
    async def audit_page(request: Request, sub: str = "") -> Response:
        await _require_admin(request)
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(200)
        if sub:
            query = query.where(AuditEvent.sub == sub[:255])
        events = await _rows(request, query)
        return page(request, "audit.html", {"events": events, "sub": sub[:255]})

    @router.get("/notifications")
    async def notifications_page(request: Request) -> Response:
        await _require_admin(request)
        query = (
            select(AuditEvent)
            .where(AuditEvent.actor == "apple", AuditEvent.event.in_(NOTIFICATION_EVENTS))
            .order_by(AuditEvent.id.desc())
            .limit(200)
        )
        return page(request, "notifications.html", {"events": await _rows(request, query)})

    @router.get("/outbox")
    async def outbox_page(request: Request) -> Response:
        await _require_admin(request)
        query = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(200)
        return page(request, "outbox.html", {"mails": await _rows(request, query)})

    @router.get("/embed")
    async def embed_page(request: Request) -> Response:
        await _require_admin(request)
        options = SnippetOptions.from_query(request.query_params)
        return page(request, "embed.html", _embed_context(request, options))

    @router.post("/embed/origins")
    async def embed_origins(request: Request) -> Response:
        form = await _form(request)
        origins, bad = parse_origins(_text(form, "origins", 4096))
        if bad:
            context = _embed_context(request, SnippetOptions())
            context["origins_error"] = f"Not an origin (scheme://host[:port]): {bad}"
            context["origins_text"] = _text(form, "origins", 4096)
            return page(request, "embed.html", context, status=400)
        await _save(
            request, {"embed_allowed_origins": origins}, event="admin.embed_origins_changed"
        )
        return RedirectResponse("/admin/embed?done=saved", status_code=303)

    return router


NOTIFICATION_EVENTS = (
    "apple.email-disabled",
    "apple.email-enabled",
    "apple.consent-revoked",
    "apple.account-delete",
    "apple.account-deleted",
)


def parse_origins(text: str) -> tuple[tuple[str, ...], str | None]:
    """Allowed origins, one a line; returns ``(origins, first invalid line or None)``."""
    origins: list[str] = []
    for line in text.replace(",", "\n").splitlines():
        value = line.strip().rstrip("/")
        if not value:
            continue
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
        ):
            return (), value
        origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return tuple(dict.fromkeys(origins)), None


def _embed_context(request: Request, options: SnippetOptions) -> dict[str, Any]:
    rt = _runtime(request)
    return {
        "options": options,
        "fields": BUTTON_FIELDS,
        "locales": LOCALES,
        "snippets": snippets(_service(request).settings.public_url, options),
        "preview_url": options.image_url(""),
        "origins": rt.allowed_origins,
        "origins_text": "\n".join(rt.allowed_origins),
        "origins_error": None,
        "query": urlencode(options.query()),
    }
