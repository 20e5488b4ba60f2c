"""The consent step shared by ``/auth/authorize`` and the JS popup: remember the validated
request, show the consent page, then turn the form's answer into the authorization result.

A mistake on the form (an invalid new email, a name too long) is a :class:`ConsentMistake`:
``invalid_request`` like any refusal, which the route shows to a browser as the same form
again, with the field marked and everything typed kept (the pending request is not used up)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from . import protocol
from ._errors import OAuthError
from .records import Account
from .state import MAX_NAME_LENGTH, EmulatorState, StateError

log = logging.getLogger(__name__)

KEPT_FIELDS = ("account", "new_email", "first_name", "last_name", "share_email")
"""The consent form's fields shown again, as typed, after a mistake."""


class ConsentMistake(OAuthError):
    """An answer the consent form must ask again: ``field`` is the field at fault and ``page``
    the consent page's context (without ``action``) with the answer and the error in it."""

    def __init__(self, field: str, description: str, page: dict[str, Any]) -> None:
        super().__init__("invalid_request", description)
        self.field = field
        self.page = page


class _FieldError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _answered() -> OAuthError:
    return OAuthError(
        "invalid_request", "This sign-in request has expired or was already answered."
    )


def _page_context(
    state: EmulatorState,
    request: protocol.AuthorizeRequest,
    request_id: str,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "client_id": request.client.client_id,
        "accounts": state.list_accounts(),
        "scopes": request.scopes,
        "values": {k: (values or {}).get(k, "") for k in KEPT_FIELDS},
        "errors": dict(errors or {}),
    }


def consent_page(
    state: EmulatorState, request: protocol.AuthorizeRequest, action: str
) -> dict[str, Any]:
    """Remember a validated request; the consent page's context, with ``action`` to post to."""
    pending = state.save_pending(request.as_params())
    return {"action": action, **_page_context(state, request, pending.id)}


def answer_consent(state: EmulatorState, form: Mapping[str, str]) -> protocol.AuthorizationResult:
    """The consent form's answer, delivered to the client: the user's choice, or cancel.

    The pending request is re-validated (the client may have changed since) and consumed only
    once the answer is valid, so that a mistake on the form (:class:`ConsentMistake`) leaves
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
        except _FieldError as exc:
            errors = {exc.field: str(exc)}
            page = _page_context(state, validated, pending_id, form, errors)
            raise ConsentMistake(exc.field, str(exc), page) from exc
    if state.take_pending(pending_id) is None:
        raise _answered()
    log.info(
        "consent page answered for client %s: %s",
        validated.client.client_id,
        "cancelled" if account is None else f"Apple ID {account.id}",
    )
    return protocol.authorize(
        state,
        validated,
        account=account,
        cancel=account is None,
        share_email=form.get("share_email", "share") != "hide",
        first_name=form.get("first_name") or None,
        last_name=form.get("last_name") or None,
    )


def _consent_account(state: EmulatorState, form: Mapping[str, str]) -> Account:
    """The Apple ID chosen on the form, or a new one; :class:`_FieldError` names the field."""
    choice = form.get("account", "")
    if choice == "new":
        for field in ("first_name", "last_name"):
            if len(form.get(field, "").strip()) > MAX_NAME_LENGTH:
                raise _FieldError(field, f"A name may be at most {MAX_NAME_LENGTH} characters.")
        email = form.get("new_email", "")
        if not email.strip():
            raise _FieldError("new_email", "Enter the email of the new Apple ID.")
        try:
            return state.create_account(
                email=email,
                first_name=form.get("first_name", ""),
                last_name=form.get("last_name", ""),
            )
        except StateError as exc:
            raise _FieldError("new_email", str(exc)) from exc
    account = state.find_account(choice)
    if account is None:
        raise _FieldError("account", "Choose an Apple ID.")
    return account
