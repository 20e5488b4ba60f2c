"""Sign in with Apple JS for the emulator: ``appleid.auth.js``.

Apple serves the script from ``appleid.cdn-apple.com`` at
``/appleauth/static/jsapi/appleid/1/<locale>/appleid.auth.js``; the emulator serves the same path.
The script implements ``AppleID.auth.init`` and ``AppleID.auth.signIn``, renders
``<div id="appleid-signin">`` buttons from their ``data-`` attributes, and dispatches
``AppleIDSignInOnSuccess`` / ``AppleIDSignInOnFailure`` on ``document``.

Without a popup the script sends the browser to ``/auth/authorize`` with
``response_mode=form_post``; with ``usePopup`` it opens ``/auth/authorize`` in a popup with
``response_mode=web_message``, as Apple's does, and the page posts the result to the opener
(:mod:`.web_message`).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from appleconnect.buttons import LOCALES

__all__ = ["router"]

SCRIPT = Path(__file__).parent / "static" / "appleid.auth.js"
# Apple's button locales (docs/buttons.md).
_LOCALE = re.compile(r"[a-z]{2}_[A-Z]{2}")

router = APIRouter(include_in_schema=False)


@functools.cache
def _script() -> bytes:
    return SCRIPT.read_bytes()


@router.get("/appleauth/static/jsapi/appleid/1/{locale}/appleid.auth.js")
async def script(locale: str) -> Response:
    """The emulator's ``appleid.auth.js`` for one of Apple's locales."""
    if not _LOCALE.fullmatch(locale) or locale not in LOCALES:
        return Response(status_code=404)
    return Response(
        _script(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )
