"""The consent step shared by ``/auth/authorize`` and the JS popup: remember the validated
request, show the consent page, then turn the form's answer into the authorization result."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from . import protocol
from ._errors import OAuthError
from .records import Account
from .state import EmulatorState, StateError

log = logging.getLogger(__name__)


def _answered() -> OAuthError:
    return OAuthError(
        "invalid_request", "This sign-in request has expired or was already answered."
    )


def consent_page(
    state: EmulatorState, request: protocol.AuthorizeRequest, action: str
) -> dict[str, Any]:
    """Remember a validated request; the consent page's context, with ``action`` to post to."""
    pending = state.save_pending(request.as_params())
    return {
        "action": action,
        "request_id": pending.id,
        "client_id": request.client.client_id,
        "accounts": state.list_accounts(),
        "scopes": request.scopes,
    }


def answer_consent(state: EmulatorState, form: Mapping[str, str]) -> protocol.AuthorizationResult:
    """The consent form's answer, delivered to the client: the user's choice, or cancel.

    The pending request is re-validated (the client may have changed since) and consumed only
    once the answer is valid, so that a mistake on the form (say, an invalid new email) leaves
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
        except StateError as exc:
            raise OAuthError("invalid_request", str(exc)) from exc
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
    choice = form.get("account", "")
    if choice == "new":
        return state.create_account(
            email=form.get("new_email", ""),
            first_name=form.get("first_name", ""),
            last_name=form.get("last_name", ""),
        )
    account = state.find_account(choice)
    if account is None:
        raise StateError("Choose an Apple ID.")
    return account
