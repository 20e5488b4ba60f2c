"""The sign-in pipeline shared by the web flow and ``apple_connect``, and the account lifecycle.

Order matters (docs/pitfalls.md#pitfall-name-only-once, docs/pitfalls.md#pitfall-code-used-twice):
the first-login name is bound to the sign-in request before anything that can fail; the app's
id_token, if any, is verified; the code is exchanged once (one call to Apple); the exchanged
id_token is verified; only then are the user (with the name), the encrypted refresh token and the
session written, in one transaction. A name never attaches to an unverified ``sub``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from appleconnect import (
    AppleConnectError,
    AppleError,
    AppleUnavailable,
    IdentityToken,
    InvalidGrant,
    InvalidIdentityToken,
    InvalidNotification,
    InvalidRequest,
    KeysUnavailable,
    Notification,
)
from appleconnect.checks import decode_unverified

from . import store
from .apple import TokenResult
from .container import ServiceContainer
from .errors import ServiceError
from .mail import welcome_values
from .models import AuthRequest, User, utcnow
from .signin_rows import SignInRows, write_sign_in_rows

log = logging.getLogger(__name__)

APPLE_RETRY_AFTER = 30
"""Seconds in ``Retry-After`` when Apple could not be reached (its keys aside)."""


@dataclass(frozen=True)
class SignInResult:
    user: User
    created: bool
    session_token: str | None
    claims: Mapping[str, Any]
    token: TokenResult | None


def unverified_claims(id_token: str | None) -> dict[str, Any]:
    """The payload of a JWT *without* verification: only to pick the client id to exchange with."""
    if not id_token or len(id_token) > 16_384:
        return {}
    try:
        return decode_unverified(id_token)[1]
    except ValueError:
        return {}


def _identity(token: IdentityToken) -> store.Identity:
    return store.Identity(
        sub=token.sub,
        email=token.email,
        email_verified=bool(token.email_verified),
        is_private_email=bool(token.is_private_email),
        transfer_sub=token.transfer_sub,
        claims=dict(token.claims),
    )


def apple_failure(exc: AppleConnectError, *, during: str) -> ServiceError:
    """Map a library error to what the caller sees; Apple's detail goes to the log only."""
    log.warning("Apple %s failed: %s", during, exc)
    if isinstance(exc, InvalidGrant):
        return ServiceError(
            "invalid_grant",
            "The authorization code or token is invalid, expired or already used.",
            status=400,
        )
    if isinstance(exc, InvalidIdentityToken):
        return ServiceError(
            "invalid_id_token", "The identity token could not be verified.", status=401
        )
    if isinstance(exc, KeysUnavailable):
        # The token names a key Apple's key set could not be fetched for: undecidable, not
        # invalid. 503 + Retry-After makes Apple deliver a notification again.
        return ServiceError(
            "apple_unavailable",
            "Apple's signing keys could not be fetched; try again in a few seconds.",
            status=503,
            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
        )
    if isinstance(exc, AppleUnavailable):
        return ServiceError(
            "apple_unavailable",
            "Apple could not be reached; try again later.",
            status=503,
            headers={"Retry-After": str(APPLE_RETRY_AFTER)},
        )
    if isinstance(exc, InvalidRequest) and during == "refresh":
        return ServiceError(
            "invalid_grant", "The refresh token was revoked or is no longer valid.", status=400
        )
    if isinstance(exc, AppleError):
        return ServiceError(
            "apple_configuration",
            "Apple refused this service's credentials; the operator has been told why.",
            status=502,
        )
    return ServiceError("apple_error", "Sign in with Apple failed.", status=502)


async def check_state(service: ServiceContainer, state: str, kind: str) -> None:
    """Raise :class:`store.StateError` unless ``state`` could be used now; changes nothing.
    Checked before the id_token, so that an unknown state costs no call to Apple for keys."""
    async with service.sessions() as db:
        peeked = await store.peek_auth_request(db=db, state=state)
    store.check_auth_request(peeked, kind=kind)


async def verify_hint(
    service: ServiceContainer, id_token_hint: str | None, *, nonce: str | None
) -> IdentityToken | None:
    """The id_token that came with the code (the form_post's, or the app's), verified before
    anything is spent or stored: a forged one changes nothing."""
    if id_token_hint is None:
        return None
    try:
        return await service.apple.verify(id_token_hint, nonce=nonce)
    except AppleConnectError as exc:
        raise apple_failure(exc, during="id_token verification") from exc


async def claim_request(
    *, service: ServiceContainer, state: str, kind: str, code: str, name: store.RequestName | None
) -> tuple[AuthRequest, store.RequestName | None]:
    """Use up the sign-in request of ``state`` (:class:`store.StateError` if it cannot be);
    returns it and the first-login name of this attempt: the one Apple sent now, or the one
    kept from an earlier attempt with the same code (docs/service.md#the-first-login-name)."""
    async with service.sessions() as db:
        pending = await store.consume_auth_request(db=db, state=state, kind=kind)
        await db.commit()
    if name is None or not (name.first_name or name.last_name):
        name = store.kept_name(pending, code)
    return pending, name


async def sign_in_with_code(
    *,
    service: ServiceContainer,
    code: str,
    client_id: str,
    redirect_uri: str | None,
    nonce: str | None,
    hinted: IdentityToken | None,
    name: store.RequestName | None,
    state: str | None,
    open_session: bool,
) -> SignInResult:
    """Exchange ``code``, verify the identity token and record the sign-in.

    ``hinted`` is the id_token that came with the code, already verified (:func:`verify_hint`).
    The name is attached only to the ``sub`` of a verified token. When Apple cannot be reached
    (503), the sign-in request of ``state`` becomes usable again and keeps the name for a retry
    with the same code; without a state, the name is kept for the ``sub`` of ``hinted`` only.
    """
    try:
        verified, token = await _exchange(service, code, client_id, redirect_uri, nonce, hinted)
    except ServiceError as exc:
        if exc.status == 503:
            await _keep_for_retry(service, state=state, code=code, hinted=hinted, name=name)
        raise
    return await _record_sign_in(
        service=service,
        verified=verified,
        client_id=client_id,
        refresh_token=token.refresh_token,
        token=token,
        first_name=name.first_name if name else None,
        last_name=name.last_name if name else None,
        open_session=open_session,
        how="code",
    )


async def _exchange(
    service: ServiceContainer,
    code: str,
    client_id: str,
    redirect_uri: str | None,
    nonce: str | None,
    hinted: IdentityToken | None,
) -> tuple[IdentityToken, TokenResult]:
    """The one call to Apple with ``code``, and the verified token it returns."""
    try:
        token = await service.apple.exchange_code(
            client_id=client_id, code=code, redirect_uri=redirect_uri
        )
    except AppleConnectError as exc:
        raise apple_failure(exc, during="code exchange") from exc
    if not token.id_token:
        raise ServiceError("apple_error", "Apple returned no identity token.", status=502)
    try:
        verified = await service.apple.verify(
            token.id_token,
            nonce=None if hinted is not None else nonce,
            access_token=token.access_token,
        )
    except AppleConnectError as exc:
        raise apple_failure(exc, during="id_token verification") from exc
    if hinted is not None and hinted.sub != verified.sub:
        # The exchanged token must belong to the user of the app's token.
        raise ServiceError(
            "invalid_id_token",
            "The id_token does not belong to the user of the code.",
            status=401,
            field="id_token",
        )
    return verified, token


async def _keep_for_retry(
    service: ServiceContainer,
    *,
    state: str | None,
    code: str,
    hinted: IdentityToken | None,
    name: store.RequestName | None,
) -> None:
    """After a transient failure: the request of ``state`` may be retried (its name stays with
    it); without one, a name is kept only for a ``sub`` that a verified token proved."""
    async with service.sessions() as db:
        if state is not None:
            await store.release_auth_request(db=db, state=state, code=code, name=name)
        elif hinted is not None and name is not None:
            await store.save_pending_name(
                db=db, sub=hinted.sub, first_name=name.first_name, last_name=name.last_name
            )
        await db.commit()


async def _record_sign_in(
    *,
    service: ServiceContainer,
    verified: IdentityToken,
    client_id: str,
    refresh_token: str | None,
    token: TokenResult | None,
    first_name: str | None,
    last_name: str | None,
    open_session: bool,
    how: str,
) -> SignInResult:
    settings = service.settings
    identity = _identity(verified)

    def record(conn: Connection) -> tuple[User, bool, str | None, bool]:
        user, created = store.upsert_user(
            conn=conn,
            identity=identity,
            client_id=client_id,
            default_role=settings.default_role,
            first_name=first_name,
            last_name=last_name,
        )
        rows = SignInRows(
            audit=store.audit_values(
                event="user.created" if created else "user.signed_in",
                actor="apple",
                sub=user.sub,
                detail={"client_id": client_id, "via": how},
            )
        )
        if refresh_token:
            rows.token = store.refresh_token_values(
                encryptor=service.encryptor,
                user_id=user.id,
                client_id=client_id,
                refresh_token=refresh_token,
            )
        session_token = None
        if open_session:
            session_token, rows.session = store.session_values(
                user_id=user.id, ttl=settings.session_ttl
            )
        if created:
            rows.mail = welcome_values(settings=settings, user=user)
        write_sign_in_rows(conn, rows)
        return user, created, session_token, rows.mail is not None

    # One transaction, run in one hop (writes.Writes).
    user, created, session_token, mailed = await service.writes.run(record)
    if mailed and service.outbox is not None:
        service.outbox.wake()
    return SignInResult(
        user=user,
        created=created,
        session_token=session_token,
        claims=dict(verified.claims),
        token=token,
    )


async def sign_in_with_refresh_token(
    *, service: ServiceContainer, refresh_token: str
) -> SignInResult:
    """Validate a stored refresh token with Apple, at most once per interval, and open a session.

    Apple throttles validation more often than once a day
    (docs/apple-protocol.md#quirk-refresh-once-a-day), so within ``refresh_validation_interval``
    the last validation is trusted without a call.
    """
    settings = service.settings
    async with service.sessions() as db:
        stored = await store.find_refresh_token(db=db, refresh_token=refresh_token)
        if stored is None:
            raise ServiceError(
                "invalid_refresh_token",
                "The refresh token is not known to this service.",
                status=401,
                field="refresh_token",
            )
        user = await db.get(User, stored.user_id)
        assert user is not None
        fresh = utcnow() - stored.validated_at < timedelta(
            seconds=settings.refresh_validation_interval
        )
        if fresh:
            session_token = await store.create_session(
                db=db, user_id=user.id, ttl=settings.session_ttl
            )
            user.last_sign_in_at = utcnow()
            await store.audit(
                db=db, event="user.signed_in", actor="apple", sub=user.sub, detail={"via": "cache"}
            )
            await db.commit()
            claims = json.loads(user.last_claims) if user.last_claims else {}
            return SignInResult(
                user=user, created=False, session_token=session_token, claims=claims, token=None
            )
        client_id, user_id, user_sub = stored.client_id, user.id, user.sub
    try:
        token = await service.apple.refresh(client_id=client_id, refresh_token=refresh_token)
        if not token.id_token:
            raise ServiceError("apple_error", "Apple returned no identity token.", status=502)
        verified = await service.apple.verify(
            token.id_token, nonce=None, access_token=token.access_token
        )
    except (InvalidGrant, InvalidRequest) as exc:
        # Revoked or invalid at Apple: the stored token is useless, and so are the sessions.
        async with service.sessions() as db:
            await store.drop_apple_tokens(db=db, user_id=user_id)
            await store.end_user_sessions(db=db, user_id=user_id)
            await store.audit(
                db=db,
                event="apple.refresh_rejected",
                actor="apple",
                sub=user_sub,
                detail={"error": exc.error},
            )
            await db.commit()
        raise apple_failure(exc, during="refresh") from exc
    except AppleConnectError as exc:
        raise apple_failure(exc, during="refresh") from exc
    if verified.sub != user_sub:
        raise ServiceError("invalid_id_token", "Apple's token names another user.", status=401)
    return await _record_sign_in(
        service=service,
        verified=verified,
        client_id=client_id,
        refresh_token=refresh_token,
        token=token,
        first_name=None,
        last_name=None,
        open_session=True,
        how="refresh_token",
    )


@dataclass(frozen=True)
class DeletionReport:
    revoked: list[str]
    revoke_failed: list[str]
    sessions_ended: int


async def delete_account(*, service: ServiceContainer, user_id: int, actor: str) -> DeletionReport:
    """Revoke the user's Apple tokens, then delete their data, and record both
    (docs/pitfalls.md#pitfall-revocation-on-deletion)."""
    async with service.sessions() as db:
        user = await db.get(User, user_id)
        if user is None:
            raise ServiceError("not_found", "The account does not exist.", status=404)
        tokens = await store.user_refresh_tokens(
            db=db, encryptor=service.encryptor, user_id=user.id
        )
        sub = user.sub
    revoked: list[str] = []
    failed: list[str] = []
    for client_id, refresh_token in tokens:
        try:
            await service.apple.revoke(client_id=client_id, refresh_token=refresh_token)
        except (AppleConnectError, KeyError) as exc:
            log.warning("revoking the token of %s for %s failed: %s", sub, client_id, exc)
            failed.append(client_id)
        else:
            revoked.append(client_id)
    async with service.sessions() as db:
        user = await db.get(User, user_id)
        ended = 0
        if user is not None:
            ended = await store.end_user_sessions(db=db, user_id=user_id)
            await store.delete_user_data(db=db, user=user)
        await store.audit(
            db=db,
            event="user.deleted",
            actor=actor,
            sub=sub,
            detail={"revoked": revoked, "revoke_failed": failed},
        )
        await db.commit()
    return DeletionReport(revoked=revoked, revoke_failed=failed, sessions_ended=ended)


async def handle_notification(*, service: ServiceContainer, body: bytes) -> tuple[str, bool]:
    """Verify, de-duplicate and apply a server-to-server notification.

    Returns ``(type, applied)``; ``applied`` is ``False`` for a duplicate ``jti``.
    """
    try:
        note: Notification = await service.apple.parse_notification(body)
    except InvalidNotification as exc:
        log.warning("rejected a notification: %s (%s)", exc, exc.reason)
        raise ServiceError(
            "invalid_notification", "The notification could not be verified.", status=400
        ) from exc
    except AppleConnectError as exc:
        raise apple_failure(exc, during="notification verification") from exc
    async with service.sessions() as db:
        if not await store.first_sight_of_jti(db=db, jti=note.jti):
            await db.rollback()
            return note.type, False
        user = await store.user_by_sub(db=db, sub=note.sub)
        detail: dict[str, Any] = {"jti": note.jti, "user_known": user is not None}
        if user is not None:
            if note.type == Notification.EMAIL_DISABLED:
                user.email_forwarding = False
            elif note.type == Notification.EMAIL_ENABLED:
                user.email_forwarding = True
                user.email_undeliverable = False  # the user wants mail again: try once more
            elif note.type == Notification.CONSENT_REVOKED:
                detail["sessions_ended"] = await store.end_user_sessions(db=db, user_id=user.id)
                detail["tokens_dropped"] = await store.drop_apple_tokens(db=db, user_id=user.id)
            elif note.type == Notification.ACCOUNT_DELETED:
                await store.delete_user_data(db=db, user=user)
        await store.audit(
            db=db, event=f"apple.{note.type}", actor="apple", sub=note.sub, detail=detail
        )
        await db.commit()
    return note.type, True
