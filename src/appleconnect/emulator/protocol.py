"""Apple's rules, independent of HTTP: what ``/auth/authorize``, ``/auth/token``, ``/auth/revoke``
and ``/auth/usermigrationinfo`` accept, refuse and answer.

Each rule names the part of docs/apple-protocol.md it follows, by anchor. Every refusal is an
:class:`OAuthError` carrying Apple's ``error`` code; descriptions are the ones observed from
Apple where known.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _jose
from ._errors import OAuthError
from .records import AccessToken, Account, AppTransfer, Client, Consent
from .state import (
    ACCESS_TOKEN_TTL,
    CLIENT_SECRET_IAT_SKEW,
    CLIENT_SECRET_MAX_TTL,
    ID_TOKEN_TTL_AUTHORIZE,
    ID_TOKEN_TTL_TOKEN,
    MIGRATION_WINDOW,
    EmulatorState,
    StateError,
)

log = logging.getLogger(__name__)

ALLOWED_SCOPES = frozenset({"openid", "email", "name"})
RESPONSE_MODES = ("query", "fragment", "form_post", "web_message")
"""``web_message`` is what Apple's JS popup asks for: the result is posted to the opener page."""
FORM_MODES = ("form_post", "web_message")
"""The modes that may carry the ``user`` JSON (name or email scope) and an id_token."""
FRAME_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
"""Apple's JS names its popup with a UUID; the emulator accepts that shape only."""
MAX_PARAM_LENGTH = 2048
MAX_NONCE_LENGTH = 512
MAX_STATE_LENGTH = 1024

CODE_EXPIRED = "The code has expired or has been revoked."
CODE_USED = "The code has already been used."
TOKEN_EXPIRED = "The token has expired or has been revoked."  # noqa: S105 - a message


@dataclass(frozen=True)
class AuthorizeRequest:
    """A validated ``/auth/authorize`` request."""

    client: Client
    redirect_uri: str | None
    response_type: frozenset[str]
    response_mode: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    frame_id: str | None = None

    def as_params(self) -> dict[str, str]:
        """The request as query parameters (to re-validate it after the consent page)."""
        params = {
            "client_id": self.client.client_id,
            "response_type": " ".join(sorted(self.response_type)),
            "response_mode": self.response_mode,
        }
        if self.redirect_uri is not None:
            params["redirect_uri"] = self.redirect_uri
        if self.scopes:
            params["scope"] = " ".join(self.scopes)
        if self.state is not None:
            params["state"] = self.state
        if self.nonce is not None:
            params["nonce"] = self.nonce
        if self.frame_id is not None:
            params["frame_id"] = self.frame_id
        return params


@dataclass(frozen=True)
class AuthorizationResult:
    """What the browser (or the native SDK) delivers to the client after the consent step."""

    redirect_uri: str | None
    response_mode: str
    params: dict[str, str]
    frame_id: str | None = None

    def location(self) -> str:
        """The URL to redirect to for ``query`` and ``fragment`` modes."""
        assert self.redirect_uri is not None
        encoded = urllib.parse.urlencode(self.params, quote_via=urllib.parse.quote)
        if self.response_mode == "fragment":
            return f"{self.redirect_uri}#{encoded}"
        separator = "&" if urllib.parse.urlsplit(self.redirect_uri).query else "?"
        return f"{self.redirect_uri}{separator}{encoded}"


def _single(
    params: Mapping[str, list[str]], name: str, *, limit: int = MAX_PARAM_LENGTH
) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise OAuthError("invalid_request", f"The parameter {name} is repeated.")
    if len(values[0]) > limit:
        raise OAuthError("invalid_request", f"The parameter {name} is too long.")
    return values[0]


def validate_authorize(
    state: EmulatorState, params: Mapping[str, list[str]], *, native: bool = False
) -> AuthorizeRequest:
    """Check ``/auth/authorize`` parameters in Apple's order (docs/apple-protocol.md#authorize;
    TN3107).

    ``native`` is the control API's stand-in for the native SDK: an App ID with no redirect URI.
    """
    client_id = _single(params, "client_id")
    if not client_id:
        raise OAuthError("invalid_request", "The parameter client_id is missing.")
    client = state.get_client(client_id)
    if client is None:
        raise OAuthError("invalid_client", "No primary app or web service was found for client_id.")
    redirect_uri = _single(params, "redirect_uri")
    _check_redirect_uri(client, redirect_uri, native=native)
    response_type = _response_type(params)
    scopes = _scopes(params)
    response_mode = _single(params, "response_mode") or ("native" if native else "query")
    if not (native and response_mode == "native"):
        _check_response_mode(response_mode, response_type, scopes)
    frame_id = _single(params, "frame_id") if response_mode == "web_message" else None
    if frame_id is not None and not FRAME_ID.fullmatch(frame_id):
        raise OAuthError("invalid_request", "The parameter frame_id is malformed.")
    return AuthorizeRequest(
        client=client,
        redirect_uri=redirect_uri,
        response_type=response_type,
        response_mode=response_mode,
        scopes=scopes,
        state=_single(params, "state", limit=MAX_STATE_LENGTH),
        nonce=_single(params, "nonce", limit=MAX_NONCE_LENGTH),
        frame_id=frame_id,
    )


def _check_redirect_uri(client: Client, redirect_uri: str | None, *, native: bool) -> None:
    if native and client.kind == "native" and redirect_uri is None:
        return
    if client.kind != "web":
        raise OAuthError("invalid_client", "The client_id is not a Services ID for the web.")
    if not redirect_uri:
        raise OAuthError("unauthorized_client", "The parameter redirect_uri is missing.")
    if redirect_uri not in client.redirect_uris:
        raise OAuthError("unauthorized_client", "Invalid web redirect url.")


def _response_type(params: Mapping[str, list[str]]) -> frozenset[str]:
    text = _single(params, "response_type")
    if not text:
        raise OAuthError("invalid_request", "The parameter response_type is missing.")
    response_type = frozenset(text.split(" "))
    if response_type == {"id_token"}:
        raise OAuthError(
            "unsupported_response_type", "response_type id_token alone is not supported."
        )
    if response_type not in ({"code"}, {"code", "id_token"}):
        raise OAuthError("invalid_request", "Invalid response_type.")
    return response_type


def _scopes(params: Mapping[str, list[str]]) -> tuple[str, ...]:
    text = _single(params, "scope")
    if not text:
        return ()
    scopes = tuple(s for s in text.split(" ") if s)
    if (
        not scopes
        or any(s not in ALLOWED_SCOPES for s in scopes)
        or len(set(scopes)) != len(scopes)
    ):
        raise OAuthError("invalid_scope", "The requested scope is invalid.")
    return scopes


def _check_response_mode(
    response_mode: str, response_type: frozenset[str], scopes: tuple[str, ...]
) -> None:
    if response_mode not in RESPONSE_MODES:
        raise OAuthError("invalid_request", "Invalid response_mode.")
    if scopes and response_mode not in FORM_MODES:
        raise OAuthError(
            "invalid_request",
            "response_mode must be form_post when name or email scope is requested.",
        )
    if "id_token" in response_type and response_mode == "query":
        raise OAuthError(
            "invalid_request", "response_mode must be fragment or form_post for id_token."
        )


def _bool_claim(state: EmulatorState, value: bool) -> str | bool:
    if state.settings.boolean_claims == "boolean":
        return value
    return "true" if value else "false"


def id_token_claims(
    state: EmulatorState,
    *,
    client: Client,
    account: Account,
    consent: Consent | None,
    nonce: str | None,
    auth_time: int,
    ttl: int,
    first: bool,
) -> dict[str, Any]:
    """The claims Apple puts in an id_token (docs/apple-protocol.md#identity-token), without the
    hash claims."""
    now = int(state.now())
    claims: dict[str, Any] = {
        "iss": state.issuer,
        "aud": client.client_id,
        "exp": now + ttl,
        "iat": now,
        "sub": state.sub_for(account.id, client.team_id),
    }
    if nonce is not None:
        claims["nonce"] = nonce
    claims["nonce_supported"] = True
    if consent is not None and "email" in consent.scopes:
        claims["email"] = state.token_email(account, consent)
        claims["email_verified"] = _bool_claim(state, True)
        claims["is_private_email"] = _bool_claim(state, not consent.share_email)
    claims["auth_time"] = auth_time
    if client.kind == "native" and first:
        # 2 = LikelyReal. Only native tokens carry it, and only for the first sign-in.
        claims["real_user_status"] = 2
    transfer = state.active_transfer_to(account.id, client.team_id)
    if transfer is not None:
        claims["transfer_sub"] = transfer.transfer_sub
    return claims


def authorize(
    state: EmulatorState,
    request: AuthorizeRequest,
    *,
    account: Account | None,
    share_email: bool = True,
    first_name: str | None = None,
    last_name: str | None = None,
    cancel: bool = False,
) -> AuthorizationResult:
    """The consent step: what the user's choice sends back to the client
    (docs/apple-protocol.md#authorization-response)."""
    params: dict[str, str] = {}
    if cancel or account is None:
        params["error"] = "user_cancelled_authorize"
        if request.state is not None:
            params["state"] = request.state
        return AuthorizationResult(
            request.redirect_uri, request.response_mode, params, request.frame_id
        )
    client = request.client
    with state.locked():
        consent = state.consent(account.id, client.team_id)
        first = consent is None
        if consent is None:
            consent = Consent(
                account_id=account.id,
                team_id=client.team_id,
                client_id=client.client_id,
                scopes=[s for s in request.scopes if s in ("name", "email")],
                share_email=share_email,
                first_name=(first_name if first_name is not None else account.first_name).strip()[
                    :64
                ],
                last_name=(last_name if last_name is not None else account.last_name).strip()[:64],
                created=state.now(),
            )
            state.save_consent(consent)
        code = state.issue_code(
            client_id=client.client_id,
            account_id=account.id,
            redirect_uri=request.redirect_uri,
            nonce=request.nonce,
            scopes=list(consent.scopes),
            first=first,
        )
    params["code"] = code.code
    if "id_token" in request.response_type:
        claims = id_token_claims(
            state,
            client=client,
            account=account,
            consent=consent,
            nonce=request.nonce,
            auth_time=code.auth_time,
            ttl=ID_TOKEN_TTL_AUTHORIZE,
            first=first,
        )
        claims["c_hash"] = _jose.half_hash(code.code)
        params["id_token"] = state.signer().sign(claims)
    if request.state is not None:
        params["state"] = request.state
    wanted = {"name", "email"} & set(request.scopes)
    if first and wanted:
        user: dict[str, Any] = {}
        if "name" in wanted:
            user["name"] = {"firstName": consent.first_name, "lastName": consent.last_name}
        if "email" in wanted:
            user["email"] = state.token_email(account, consent)
        params["user"] = json.dumps(user, separators=(",", ":"), ensure_ascii=False)
    return AuthorizationResult(
        request.redirect_uri, request.response_mode, params, request.frame_id
    )


# -- the token endpoint ---------------------------------------------------------------------------


def authenticate_client(state: EmulatorState, form: Mapping[str, str]) -> Client:
    """Check ``client_id`` and ``client_secret`` like Apple (docs/apple-protocol.md#client-secret);
    return the client."""
    client_id = form.get("client_id")
    if not client_id:
        raise OAuthError("invalid_request", "The parameter client_id is missing.")
    secret = form.get("client_secret")
    if not secret:
        raise OAuthError("invalid_request", "The parameter client_secret is missing.")
    client = state.get_client(client_id)
    if client is None:
        raise OAuthError("invalid_client", "No client is registered with this client_id.")
    try:
        header = _jose.read_secret_header(secret)
        if header.get("alg") != "ES256":
            raise _jose.SecretCheckError("The client secret must be signed with ES256.")
        kid = header.get("kid")
        key = state.client_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise _jose.SecretCheckError("The client secret kid is not a registered Key ID.")
        claims = _jose.verify_es256(secret, key.public_pem)
        _check_secret_claims(state, claims, client, key.team_id)
    except _jose.SecretCheckError as exc:
        raise OAuthError("invalid_client", str(exc)) from exc
    return client


def _check_secret_claims(
    state: EmulatorState, claims: dict[str, Any], client: Client, key_team: str
) -> None:
    fail = _jose.SecretCheckError
    if claims.get("iss") != key_team:
        raise fail("The client secret iss is not the Team ID that owns the key.")
    if client.team_id != key_team:
        raise fail("The client_id does not belong to the team of the client secret.")
    if claims.get("sub") != client.client_id:
        raise fail("The client secret sub is not identical to client_id.")
    aud = claims.get("aud")
    if aud != state.issuer and not (isinstance(aud, list) and aud == [state.issuer]):
        raise fail(f"The client secret aud must be {state.issuer}.")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise fail("The client secret exp is missing or not an integer.")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise fail("The client secret iat is missing or not an integer.")
    now = state.now()
    if exp <= now:
        raise fail("The client secret has expired.")
    if exp - now > CLIENT_SECRET_MAX_TTL:
        raise fail("The client secret exp is more than 15777000 seconds (6 months) ahead.")
    if iat > now + CLIENT_SECRET_IAT_SKEW:
        raise fail("The client secret iat is in the future.")


def token(state: EmulatorState, form: Mapping[str, str]) -> dict[str, Any]:
    """``POST /auth/token`` once the body is parsed: a ``TokenResponse`` or an OAuthError."""
    grant_type = form.get("grant_type")
    if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
        raise OAuthError("unsupported_grant_type", "The grant type is not supported.")
    client = authenticate_client(state, form)
    if grant_type == "authorization_code":
        return _code_grant(state, client, form)
    if grant_type == "refresh_token":
        return _refresh_grant(state, client, form)
    scope = form.get("scope")
    if scope != "user.migration":
        raise OAuthError("invalid_scope", "The requested scope is invalid.")
    access = state.issue_access_token(
        client_id=client.client_id, team_id=client.team_id, account_id=None, scope=scope
    )
    return _token_response(access)


def _token_response(access: AccessToken, **tokens: str) -> dict[str, Any]:
    # Apple's TokenResponse: the access token first, then refresh_token and id_token if any.
    return {
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_TTL,
        **tokens,
    }


def _code_grant(state: EmulatorState, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
    value = form.get("code")
    if not value:
        raise OAuthError("invalid_request", "The parameter code is missing.")
    with state.locked():
        code = state.get_code(value)
        if code is None or code.expires_at <= state.now():
            raise OAuthError("invalid_grant", CODE_EXPIRED)
        if code.used:
            raise OAuthError("invalid_grant", CODE_USED)
        if code.client_id != client.client_id:
            raise OAuthError(
                "invalid_grant",
                f"client_id mismatch. The code was not issued to {client.client_id}.",
            )
        redirect_uri = form.get("redirect_uri")
        if code.redirect_uri is not None and redirect_uri != code.redirect_uri:
            raise OAuthError("invalid_client", "Invalid redirect_uri.")
        # One store transaction for the spent code and both new tokens.
        state.mark_code_used(code)
        account = _account(state, code.account_id)
        refresh = state.issue_refresh_token(code)
        access = state.issue_access_token(
            client_id=client.client_id, team_id=client.team_id, account_id=account.id
        )
    log.debug("code exchanged by %s for Apple ID %s", client.client_id, account.id)
    id_token = _token_id_token(
        state, client, account, access, nonce=code.nonce, auth_time=code.auth_time, first=code.first
    )
    return _token_response(access, refresh_token=refresh.token, id_token=id_token)


def _account(state: EmulatorState, account_id: str) -> Account:
    account = state.find_account(account_id)
    if account is None:
        raise OAuthError("invalid_grant", CODE_EXPIRED)
    return account


def _token_id_token(
    state: EmulatorState,
    client: Client,
    account: Account,
    access: AccessToken,
    *,
    nonce: str | None,
    auth_time: int,
    first: bool,
) -> str:
    """The id_token of a ``/auth/token`` answer, bound to its access token by ``at_hash``."""
    claims = id_token_claims(
        state,
        client=client,
        account=account,
        consent=state.consent(account.id, client.team_id),
        nonce=nonce,
        auth_time=auth_time,
        ttl=ID_TOKEN_TTL_TOKEN,
        first=first,
    )
    claims["at_hash"] = _jose.half_hash(access.token)
    return state.signer().sign(claims)


def _refresh_grant(state: EmulatorState, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
    value = form.get("refresh_token")
    if not value:
        raise OAuthError("invalid_request", "The parameter refresh_token is missing.")
    refresh = state.get_refresh_token(value)
    if refresh is None or refresh.revoked:
        raise OAuthError("invalid_grant", TOKEN_EXPIRED)
    if refresh.client_id != client.client_id:
        raise OAuthError(
            "invalid_grant", f"client_id mismatch. The token was not issued to {client.client_id}."
        )
    account = _account(state, refresh.account_id)
    access = state.issue_access_token(
        client_id=client.client_id, team_id=client.team_id, account_id=account.id
    )
    id_token = _token_id_token(
        state, client, account, access, nonce=None, auth_time=refresh.auth_time, first=False
    )
    return _token_response(access, id_token=id_token)


def revoke(state: EmulatorState, form: Mapping[str, str]) -> tuple[str, str] | None:
    """``POST /auth/revoke``: end the consent a token belongs to (docs/apple-protocol.md#revoke).

    Returns ``(account_id, team_id)`` of the consent that ended, or None when the token was
    already invalid (Apple answers 200 either way).
    """
    client = authenticate_client(state, form)
    value = form.get("token")
    if not value:
        raise OAuthError("invalid_request", "The parameter token is missing.")
    hint = form.get("token_type_hint")
    if hint is not None and hint not in ("refresh_token", "access_token"):
        raise OAuthError("invalid_request", "Invalid token_type_hint.")
    with state.locked():
        refresh = state.get_refresh_token(value)
        access = state.get_access_token(value)
        record: Any = refresh or access
        if record is None or record.client_id != client.client_id or record.revoked:
            return None
        kind = "refresh_token" if refresh is not None else "access_token"
        if hint is not None and hint != kind:
            raise OAuthError("invalid_request", "The token does not match the token_type_hint.")
        if record.account_id is None:
            # A user.migration access token ends no consent; it simply stops working.
            state.revoke_access_token(record.token)
            return None
        state.end_consent(record.account_id, record.team_id)
        return (record.account_id, record.team_id)


# -- user migration -------------------------------------------------------------------------------


def usermigrationinfo(
    state: EmulatorState, form: Mapping[str, str], bearer: str | None
) -> dict[str, Any]:
    """``POST /auth/usermigrationinfo`` (docs/apple-protocol.md#migration; Apple's TN3159)."""
    client = authenticate_client(state, form)
    if not bearer:
        raise OAuthError("invalid_request", "The Authorization bearer token is missing.")
    access = state.get_access_token(bearer)
    if access is None or access.revoked or access.expires_at <= state.now():
        raise OAuthError("invalid_request", "The access token is invalid or has expired.")
    if access.team_id != client.team_id:
        raise OAuthError("invalid_request", "The access token and client_id do not match.")
    sub, target, transfer_sub = form.get("sub"), form.get("target"), form.get("transfer_sub")
    if transfer_sub and (sub or target):
        raise OAuthError("invalid_request", "Send either sub and target, or transfer_sub.")
    if sub or target:
        return _export_user(state, client, sub, target)
    if not transfer_sub:
        raise OAuthError("invalid_request", "The parameter transfer_sub is missing.")
    return _import_user(state, client, transfer_sub)


def _export_user(
    state: EmulatorState, client: Client, sub: str | None, target: str | None
) -> dict[str, Any]:
    # The sending team: its user's sub and the receiving team give a transfer_sub.
    if not sub or not target:
        raise OAuthError("invalid_request", "Both sub and target are required.")
    account = state.account_for_sub(sub, client.team_id)
    if account is None:
        raise OAuthError("invalid_request", "The sub is not a user of this team.")
    try:
        state.get_team(target)
    except StateError as exc:
        raise OAuthError("invalid_request", "The target team is invalid.") from exc
    if target == client.team_id:
        raise OAuthError("invalid_request", "The target team is the sending team.")
    moved = state.completed_app_transfer(client.team_id, target)
    if moved is not None:
        _check_migration_window(state, moved)
    transfer = state.record_transfer(account.id, client.team_id, target)
    return {"transfer_sub": transfer.transfer_sub}


def _import_user(state: EmulatorState, client: Client, transfer_sub: str) -> dict[str, Any]:
    # The receiving team: a transfer_sub gives the user's sub (and relay email) in this team.
    incoming = state.get_transfer(transfer_sub)
    if incoming is None or incoming.to_team != client.team_id:
        raise OAuthError("invalid_request", "The transfer_sub is invalid.")
    moved = state.completed_app_transfer(incoming.from_team, client.team_id)
    if moved is None:
        raise OAuthError("invalid_request", "No app has been transferred to this team yet.")
    _check_migration_window(state, moved)
    target_account = state.find_account(incoming.account_id)
    if target_account is None:
        raise OAuthError("invalid_request", "The transfer_sub is invalid.")
    old = state.consent(target_account.id, incoming.from_team)
    private = old is not None and not old.share_email
    with state.locked():
        if state.consent(target_account.id, client.team_id) is None and old is not None:
            # The user's consent moves with the app: no first-time consent in the new team.
            state.save_consent(
                Consent(
                    account_id=target_account.id,
                    team_id=client.team_id,
                    client_id=client.client_id,
                    scopes=list(old.scopes),
                    share_email=old.share_email,
                    first_name=old.first_name,
                    last_name=old.last_name,
                    created=state.now(),
                )
            )
    out: dict[str, Any] = {"sub": state.sub_for(target_account.id, client.team_id)}
    if private:
        out["email"] = state.relay_email_for(target_account.id, client.team_id)
    out["is_private_email"] = private
    return out


def _check_migration_window(state: EmulatorState, moved: AppTransfer) -> None:
    # The migration endpoint answers for 60 days after the app transfer (TN3159).
    if moved.at + MIGRATION_WINDOW <= state.now():
        raise OAuthError("invalid_request", "The migration period has ended.")
