"""The email sources the configuration needs at Apple's Private Email Relay, for the admin panel:
what to register and how, and (in sandbox mode) whether the emulator has them registered.

In production nothing can be checked from here (Apple's portal has no API for it): the panel
reminds. See docs/admin.md#email-sources.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from ..container import ServiceContainer
from ..relay_mail import required_sources
from ..settings import Settings

__all__ = ["REGISTRATION_STEPS", "check_email_sources", "email_sources_context"]

log = logging.getLogger(__name__)

REGISTRATION_STEPS = (
    "In Apple's developer account, open Certificates, Identifiers & Profiles, then Services.",
    'Under "Sign in with Apple for Email Communication", choose Configure.',
    "Add the domain below under Email Sources (or the address, under Email Addresses), "
    "then Register.",
    "Publish an SPF record for the domain that names your SMTP server, or sign with DKIM "
    "(d= the domain); Apple checks SPF when you register.",
)
MAX_ANSWER_BYTES = 256 * 1024


def email_sources_context(settings: Settings) -> dict[str, Any]:
    """The sources to register and the steps, for a page."""
    return {
        "sources": required_sources(settings),
        "steps": REGISTRATION_STEPS,
        "sandbox": settings.sandbox,
    }


async def _registered_at_emulator(http: httpx.AsyncClient, settings: Settings) -> set[str] | None:
    # The domains and addresses the emulator has for the team (None: it could not be asked).
    url = settings.apple_base_url.rstrip("/") + "/emulator/email-sources"
    try:
        response = await http.get(url, params={"team_id": settings.team_id})
    except httpx.HTTPError as exc:
        log.info("the emulator's email sources could not be read: %s", exc)
        return None
    if response.status_code != 200 or len(response.content) > MAX_ANSWER_BYTES:
        return None
    try:
        sources = response.json()["sources"]
        return {str(s.get("domain") or s.get("email")).lower() for s in sources}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


async def check_email_sources(service: ServiceContainer, settings: Settings) -> dict[str, Any]:
    """Whether the sources are registered: asked of the emulator in sandbox mode; a reminder in
    production."""
    sources = required_sources(settings)
    result: dict[str, Any] = {**email_sources_context(settings), "rows": [], "ok": None}
    if not sources:
        result["detail"] = "No sender address (mail_from) is set: nothing to register yet."
        return result
    if not settings.sandbox:
        result["detail"] = (
            "Apple cannot be asked which sources are registered: check them in the developer "
            "portal. Mail to relay addresses from an unregistered source bounces."
        )
        return result
    registered = await _registered_at_emulator(service.apple.http, settings)
    if registered is None:
        result.update(ok=False, detail="The emulator's email sources could not be read.")
        return result
    rows = [(s, s.value.lower() in registered) for s in sources]
    result["rows"] = rows
    result["ok"] = any(found for _, found in rows)
    result["detail"] = (
        "The emulator's relay has a source registered for this sender."
        if result["ok"]
        else "The emulator's relay has none of these sources registered: mail to relay "
        "addresses will bounce."
    )
    return result
