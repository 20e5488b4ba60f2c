"""The Apple settings page (``/admin/apple``): redirect URI, client ids, Team ID, Key ID, the
.p8 key and how the client secret is made; every value is checked as Apple would before it is
stored."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from appleconnect import ClientSecret
from appleconnect.checks import (
    SECRET_EXPIRY_WARNING,
    decode_unverified,
    load_private_key,
    redirect_uri_problem,
    run_checks,
    validate_client_id,
    validate_team_or_key_id,
)

from ..container import ServiceContainer
from ..deps import AdminFormWithFile, AdminSession, get_container, get_live_settings
from ..settings import Secret, Settings, SettingsError
from .pages import form_text, page, save_settings

__all__ = ["key_facts", "router", "secret_facts"]

router = APIRouter(prefix="/admin", include_in_schema=False)

MAX_KEY_BYTES = 16_384
_ANY_ID = "AAAAAAAAAA"  # a well-formed Team ID/Key ID, for key_facts


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


def secret_facts(service: ServiceContainer, settings: Settings) -> dict[str, Any]:
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
    service = get_container(request)
    s = service.settings
    try:
        pem = s.private_key_pem()
    except SettingsError:
        pem = ""
    return {
        "live": get_live_settings(request),
        "key": key_facts(pem),
        "secret": secret_facts(service, s),
        "redirect_strict_problem": redirect_uri_problem(s.effective_redirect_uri),
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


@router.get("/apple")
async def apple_page(request: Request, _admin: AdminSession) -> Response:
    return page(request, "apple.html", _apple_context(request))


@dataclass
class _AppleForm:
    """The Apple settings form as submitted, and what checking it found."""

    redirect_uri: str
    client_id: str
    app_ids: tuple[str, ...]
    team_id: str
    key_id: str
    mode: str
    pasted: str
    pem: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, form: FormData) -> _AppleForm:
        app_ids = tuple(
            dict.fromkeys(
                v.strip() for v in form_text(form, "app_ids", 4096).replace(",", "\n").splitlines()
            )
        )
        return cls(
            redirect_uri=form_text(form, "redirect_uri"),
            client_id=form_text(form, "client_id", 255),
            app_ids=tuple(v for v in app_ids if v),
            team_id=form_text(form, "team_id", 64),
            key_id=form_text(form, "key_id", 64),
            mode=form_text(form, "secret_mode", 16),
            pasted="".join(form_text(form, "client_secret", 8192).split()),
        )

    def values(self) -> dict[str, str]:
        """What the form shows again when it is refused."""
        return {
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "app_ids": "\n".join(self.app_ids),
            "team_id": self.team_id,
            "key_id": self.key_id,
            "secret_mode": self.mode,
        }

    def check_redirect_uri(self, sandbox: bool) -> None:
        if not self.redirect_uri:
            return
        problem = redirect_uri_problem(self.redirect_uri, sandbox=sandbox)
        strict = redirect_uri_problem(self.redirect_uri)
        if problem:
            self.errors["redirect_uri"] = f"Apple would refuse this redirect URI: {problem}."
        elif strict:
            self.notes.append(
                "Redirect URI accepted because this is sandbox mode; Apple would refuse it: "
                f"{strict}."
            )

    def check_ids(self) -> None:
        for name, value, what in (
            ("team_id", self.team_id, "Team ID"),
            ("key_id", self.key_id, "Key ID"),
        ):
            if value:
                try:
                    validate_team_or_key_id(value, what)
                except (ValueError, TypeError) as exc:
                    self.errors[name] = str(exc)
        if self.client_id:
            try:
                validate_client_id(self.client_id, self.team_id or None)
            except (ValueError, TypeError) as exc:
                self.errors["client_id"] = str(exc)
        for app_id in self.app_ids:
            try:
                validate_client_id(app_id, self.team_id or None)
            except (ValueError, TypeError) as exc:
                self.errors["app_ids"] = f"{app_id}: {exc}"

    async def check_key(self, form: FormData) -> None:
        pem, upload_error = await _read_key_upload(form)
        if upload_error:
            self.errors["private_key"] = upload_error
        elif pem:
            try:
                load_private_key(pem)
            except (ValueError, TypeError) as exc:
                self.errors["private_key"] = str(exc)
        self.pem = pem

    def check_secret(self, s: Settings) -> None:
        if self.mode == "auto":
            return
        if self.mode != "pasted":
            self.errors["secret_mode"] = "Choose how the client secret is made."  # noqa: S105
        elif not self.pasted and not s.client_secret:
            self.errors["client_secret"] = "Paste the client secret, or choose automatic."  # noqa: S105
        elif self.pasted:
            checks = run_checks(
                team_id=self.team_id or None,
                key_id=self.key_id or None,
                client_ids=[self.client_id] if self.client_id else [],
                client_secret=self.pasted,
                sandbox=s.sandbox,
            )
            verdict = next(c for c in checks if c.name == "pasted client secret")
            if not verdict.ok:
                self.errors["client_secret"] = f"Refused: the client secret is {verdict.detail}."
            elif verdict.warning:
                self.notes.append(
                    f"The pasted client secret is {verdict.detail}: make a new one soon."
                )

    def changes(self, s: Settings) -> dict[str, Any]:
        """The settings that differ from ``s`` (the key and the secret whenever given)."""
        changes: dict[str, Any] = {
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "app_ids": self.app_ids,
            "team_id": self.team_id,
            "key_id": self.key_id,
        }
        changes = {k: v for k, v in changes.items() if getattr(s, k) != v}
        if self.pem:
            changes["private_key"] = Secret(self.pem)
        if self.mode == "auto" and s.client_secret:
            changes["client_secret"] = Secret("")
        elif self.mode == "pasted" and self.pasted:
            changes["client_secret"] = Secret(self.pasted)
        return changes


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
    return form_text(form, "private_key", MAX_KEY_BYTES), None


@router.post("/apple")
async def apple_save(request: Request, form: AdminFormWithFile) -> Response:
    s = get_container(request).settings
    submitted = _AppleForm.read(form)
    submitted.check_redirect_uri(s.sandbox)
    submitted.check_ids()
    await submitted.check_key(form)
    submitted.check_secret(s)
    changes: dict[str, Any] = {}
    if not submitted.errors:
        changes = submitted.changes(s)
        try:
            get_live_settings(request).candidate(changes)
        except SettingsError as exc:
            submitted.errors["form"] = str(exc)
    if submitted.errors:
        context = _apple_context(request)
        context.update(errors=submitted.errors, values=submitted.values(), notes=submitted.notes)
        return page(request, "apple.html", context, status=400)
    if changes:
        await save_settings(request, changes, event="admin.apple_settings_changed")
    context = _apple_context(request)
    context.update(notes=submitted.notes, saved=bool(changes))
    return page(request, "apple.html", context)
