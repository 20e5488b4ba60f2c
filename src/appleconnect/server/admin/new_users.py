"""The "New users" page (``/admin/new-users``): the role new users get, the welcome email, and
the SMTP server that sends it (with a test email). Its old URLs (``/admin/import``, from when it
was called "User import") redirect here."""

from __future__ import annotations

import asyncio
import smtplib
from typing import Any

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.requests import Request

from ..container import ServiceContainer
from ..deps import AdminForm, AdminSession, ContainerDep, get_container, get_live_settings
from ..mail import send_mail
from ..models import OutboxMail, utcnow
from ..settings import Secret, Settings, SettingsError
from .email_sources import email_sources_context
from .pages import audit, form_text, page, save_settings

__all__ = ["router", "send_test_email"]

router = APIRouter(prefix="/admin", include_in_schema=False)


def _page_context(request: Request) -> dict[str, Any]:
    s = get_container(request).settings
    return {
        "live": get_live_settings(request),
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
        "relay": {
            **email_sources_context(s),
            "rows": [],
            "ok": None,
            "detail": "“Verify settings” checks them"
            + (" against the emulator." if s.sandbox else " (a reminder: Apple cannot be asked)."),
        },
    }


@router.get("/new-users")
async def new_users_page(request: Request, _admin: AdminSession) -> Response:
    return page(request, "new_users.html", _page_context(request))


@router.api_route("/import", methods=["GET", "POST"])
@router.api_route("/import/test-email", methods=["GET", "POST"])
async def old_url(request: Request) -> Response:
    """The page's URLs from when it was called "User import": 308 to the new ones (a form posted
    to an old URL is posted again, with its body, to the new one)."""
    path = request.url.path.replace("/admin/import", "/admin/new-users", 1)
    query = request.url.query
    return RedirectResponse(path + (f"?{query}" if query else ""), status_code=308)


def _read(form: FormData) -> dict[str, Any]:
    return {
        "default_role": form_text(form, "default_role", 64),
        "welcome_email": form.get("welcome_email") == "on",
        "mail_from": form_text(form, "mail_from", 320),
        "welcome_subject": form_text(form, "welcome_subject", 200) or "Welcome",
        "smtp_host": form_text(form, "smtp_host", 255),
        "smtp_port": form_text(form, "smtp_port", 8) or "587",
        "smtp_security": form_text(form, "smtp_security", 16),
        "smtp_username": form_text(form, "smtp_username", 255),
    }


def _problems(values: dict[str, Any], s: Settings) -> dict[str, str]:
    errors: dict[str, str] = {}
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
    return errors


def _changes(values: dict[str, Any], form: FormData, s: Settings) -> dict[str, Any]:
    changes = {k: v for k, v in values.items() if k != "smtp_port"}
    changes["smtp_port"] = int(values["smtp_port"])
    changes = {k: v for k, v in changes.items() if getattr(s, k) != v}
    password = form.get("smtp_password")
    if form.get("clear_smtp_password") == "on":
        changes["smtp_password"] = Secret("")
    elif isinstance(password, str) and password:
        changes["smtp_password"] = Secret(password[:512])
    return changes


@router.post("/new-users")
async def new_users_save(request: Request, form: AdminForm, service: ContainerDep) -> Response:
    s = service.settings
    values = _read(form)
    errors = _problems(values, s)
    changes: dict[str, Any] = {}
    if not errors:
        changes = _changes(values, form, s)
        try:
            get_live_settings(request).candidate(changes)
        except SettingsError as exc:
            errors["form"] = str(exc)
    if errors:
        context = _page_context(request)
        context.update(errors=errors, values=values)
        return page(request, "new_users.html", context, status=400)
    if changes:
        await save_settings(request, changes, event="admin.new_users_changed")
    return RedirectResponse("/admin/new-users?done=saved", status_code=303)


async def send_test_email(
    service: ServiceContainer, settings: Settings, to: str
) -> tuple[bool, str]:
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
        await asyncio.to_thread(send_mail, settings, mail)
    except (OSError, smtplib.SMTPException) as exc:
        return False, f"Sending failed: {exc}"
    return True, f"Sent to {to} through {settings.smtp_host}:{settings.smtp_port}."


@router.post("/new-users/test-email")
async def test_email(request: Request, form: AdminForm, service: ContainerDep) -> Response:
    to = form_text(form, "to", 320)
    context = _page_context(request)
    if "@" not in to or any(c.isspace() for c in to):
        context["test_result"] = (False, "Give the address to send the test email to.")
        return page(request, "new_users.html", context, status=400)
    ok, detail = await send_test_email(service, service.settings, to)
    await audit(request, "admin.test_email", detail={"to": to, "ok": ok})
    context["test_result"] = (ok, detail)
    return page(request, "new_users.html", context, status=200 if ok else 502)
