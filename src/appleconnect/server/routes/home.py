"""The demo page at ``/`` (sign in, see who is signed in, sign out, delete the account) and the
health check ``/healthz``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from starlette.requests import Request

from .. import store
from ..deps import ContainerDep
from ..html import templates

__all__ = ["router"]

router = APIRouter()

MESSAGES = {
    "cancelled": "Sign in with Apple was cancelled.",
    "signed_out": "You are signed out.",
    "deleted": "Your account was deleted.",
}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request, service: ContainerDep, signin: str | None = None) -> Response:
    settings = service.settings
    user = None
    token = request.cookies.get(settings.session_cookie)
    if token:
        user = await store.session_user(reads=service.reads, raw=token)
    return templates.TemplateResponse(
        request,
        "index.html",
        {
            "user": user,
            "message": MESSAGES.get(signin or ""),
            "sandbox": settings.sandbox,
            "apple_base_url": settings.apple_base_url,
        },
    )


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
