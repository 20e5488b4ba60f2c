"""The emulator's HTML pages (consent, errors, form_post, web_message), rendered with a CSP.

Every page carries a fresh script nonce, ``Cache-Control: no-store``, ``X-Content-Type-Options:
nosniff`` and a Content-Security-Policy that allows only its own inline script, so that nothing
the request carried can run in it.
"""

from __future__ import annotations

import secrets
from typing import Any

import jinja2
from fastapi.responses import HTMLResponse

from ._errors import OAuthError
from ._http import NO_STORE

FORM_ACTION_ANY = "'self' http: https:"
"""Where the consent page and the form_post page may submit: here, or to a redirect URI."""


class Pages:
    """Renders the package's Jinja templates (``appleconnect/emulator/templates``)."""

    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("appleconnect.emulator", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def render(
        self,
        template: str,
        status: int = 200,
        *,
        form_action: str = FORM_ACTION_ANY,
        **context: Any,
    ) -> HTMLResponse:
        """One page: ``context`` goes to the template, which gets ``script_nonce`` as well."""
        script_nonce = secrets.token_urlsafe(12)
        body = self._env.get_template(template).render(script_nonce=script_nonce, **context)
        csp = (
            "default-src 'none'; style-src 'unsafe-inline'; "
            f"script-src 'nonce-{script_nonce}'; form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return HTMLResponse(
            body,
            status_code=status,
            headers={
                **NO_STORE,
                "Content-Security-Policy": csp,
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
            },
        )

    def error(self, exc: OAuthError, **options: Any) -> HTMLResponse:
        """Apple's error shown as a page (Apple answers browsers with a page, not JSON)."""
        return self.render(
            "error.html", exc.status, error=exc.error, description=exc.description, **options
        )
