"""The "verify settings" page (``/admin/verify``): the offline checks of ``appleconnect doctor``,
then one token call to Apple with a dummy code, which tells whether Apple accepts the client id
and the client secret."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.requests import Request

from appleconnect import AppleConnectError, AppleUnavailable, InvalidClient, InvalidGrant
from appleconnect.checks import Check, run_checks

from ..container import ServiceContainer
from ..deps import AdminForm, AdminSession, ContainerDep
from ..settings import Settings, SettingsError
from .email_sources import check_email_sources
from .pages import audit, page

__all__ = ["router", "verify_settings"]

router = APIRouter(prefix="/admin", include_in_schema=False)


def _offline_checks(settings: Settings) -> list[Check]:
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
    return offline


async def _live_check(service: ServiceContainer, settings: Settings) -> dict[str, Any]:
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
            # The same list, in the same order, as the library's own InvalidClient message.
            causes=InvalidClient.likely_causes,
        )
    except AppleUnavailable as exc:
        live.update(answer="unreachable", detail=f"Apple could not be reached: {exc}")
    except AppleConnectError as exc:
        error = getattr(exc, "error", type(exc).__name__)
        live.update(answer=str(error), detail=str(exc))
    except (KeyError, ValueError, TypeError) as exc:
        live.update(answer="not configured", detail=f"No client for the Client ID: {exc}")
    return live


async def verify_settings(service: ServiceContainer, settings: Settings) -> dict[str, Any]:
    """The offline checks of ``appleconnect doctor``, then one token call with a dummy code."""
    offline = _offline_checks(settings)
    live = await _live_check(service, settings)
    passed = live["ok"] and all(c.ok for c in offline)
    relay = await check_email_sources(service, settings)
    return {"offline": offline, "live": live, "passed": passed, "relay": relay}


@router.get("/verify")
async def verify_page(request: Request, _admin: AdminSession) -> Response:
    return page(request, "verify.html", {"result": None})


@router.post("/verify")
async def verify(request: Request, _form: AdminForm, service: ContainerDep) -> Response:
    result = await verify_settings(service, service.settings)
    await audit(
        request,
        "admin.settings_verified",
        detail={"passed": result["passed"], "apple_answer": result["live"]["answer"]},
    )
    return page(request, "verify.html", {"result": result})
