"""``AppleSignIn``: the web sign-in, notifications and account deletion, for any framework.

The framework adapters (``.fastapi``, ``.flask``, ``.django``) turn requests into calls here:

1. ``start()``: a random ``state`` and ``nonce`` are stored server-side with the SHA-256 of a
   random browser value that the adapter puts in a short-lived cookie; the browser goes to Apple.
2. ``callback(form)``: Apple's form_post. It is a cross-site POST, so the browser's Lax cookies
   are not sent: the state is looked up server-side (single use), the code exchanged, the
   id_token verified (nonce included) and the result kept under a one-time token.
3. ``finish(token, browser_value)``: the browser comes back with a GET, with its cookie this
   time; only the browser that started the sign-in can finish it. The account is created or
   updated (the name only from the first sign-in) and a session opened.

Notifications are verified with Apple's keys and applied once per ``jti``. Deleting an account
revokes its refresh token at Apple first (Apple requires apps to do so).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appleconnect import (
    APPLE_BASE_URL,
    AppleClient,
    AppleConnectError,
    AppleUnavailable,
    ClientSecret,
    KeysUnavailable,
    Notification,
    parse_authorization_response,
    parse_notification,
)

from ._crypto import TokenCipher
from ._records import AppleAccount, CompletedSignIn, PendingSignIn
from ._store import SignInStore

logger = logging.getLogger(__name__)

SIGN_IN_TTL = 600.0
"""Seconds a started sign-in may take before its callback (Apple's consent included)."""
FINISH_TTL = 120.0
"""Seconds between the callback and the browser's return to ``/finish``."""
SESSION_TTL = 14 * 86400.0
MAX_NOTIFICATION_BYTES = 64 * 1024
MAX_CALLBACK_BYTES = 16 * 1024
BROWSER_COOKIE = "apple_signin_browser"
"""The short-lived cookie that binds a sign-in to the browser that started it."""
SESSION_COOKIE = "apple_session"
"""The session cookie of the FastAPI and Flask adapters (Django uses its own session)."""
FAILED = "Sign in with Apple did not complete. Please try again."
"""The one message users see when a sign-in fails (the log says why)."""


APPLE_RETRY_AFTER = 30
"""Seconds in ``Retry-After`` when Apple could not be reached (its keys aside)."""


@dataclass(frozen=True)
class Refusal:
    """How an adapter answers a notification it could not apply."""

    status: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)


def notification_refusal(exc: AppleConnectError) -> Refusal:
    """400 for a notification Apple did not sign (Apple does not retry); 503 with
    ``Retry-After`` when Apple or its key set could not be reached, as when Apple rotates its
    keys during an outage: the notification may be genuine, and Apple delivers it again."""
    if isinstance(exc, AppleUnavailable):
        logger.warning("Could not verify an Apple notification now: %s", exc)
        seconds = math.ceil(exc.retry_after) if isinstance(exc, KeysUnavailable) else 0
        return Refusal(
            503,
            "Apple's keys cannot be fetched now; deliver again later.",
            {"Retry-After": str(max(1, seconds or APPLE_RETRY_AFTER))},
        )
    logger.warning("Refused an Apple notification: %s", exc)
    return Refusal(400, "Invalid notification.")


class SignInError(Exception):
    """Raised when a sign-in cannot go on. ``reason`` is for logs; show users one generic page.

    ``reason`` is one of ``malformed``, ``cancelled``, ``apple_error``, ``unknown_state``,
    ``expired``, ``token``, ``unknown_finish``, ``browser``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and the value of the cookie that binds the sign-in to it."""

    url: str
    browser_value: str = field(repr=False)


@dataclass(frozen=True)
class Finished:
    """A finished sign-in: the account, a new session token and where to go next."""

    account: AppleAccount
    session_token: str = field(repr=False)
    next_path: str
    created: bool


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def safe_next_path(value: str | None) -> str:
    """``value`` when it is a path on this site (``/...``, not ``//host`` nor ``/\\host``, at
    most 512 characters, no control character: browsers drop tabs and newlines from URLs, which
    would turn ``/\t/host`` into ``//host``), else ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if len(value) > 512 or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        return "/"
    return value


class AppleSignIn:
    """Sign in with Apple for a web app: the flow, the account mapping and the notifications.

    ``client`` is an :class:`~appleconnect.AppleClient` for your Services ID, with your App ID in
    ``extra_audiences`` (notifications are addressed to it). ``redirect_uri`` is the callback
    URL registered at Apple; ``store`` a :class:`SignInStore`. ``encryption_key`` is a Fernet
    key (or several, the first encrypting; see :mod:`._crypto`): Apple's refresh tokens reach the
    store only encrypted with it. ``secure_cookies`` is for the adapters: keep it on outside
    local development.
    """

    def __init__(
        self,
        client: AppleClient,
        *,
        redirect_uri: str,
        store: SignInStore,
        encryption_key: str | Sequence[str],
        scope: tuple[str, ...] = ("name", "email"),
        secure_cookies: bool = True,
        session_ttl: float = SESSION_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.redirect_uri = redirect_uri
        self.store = store
        self.cipher = TokenCipher(encryption_key)
        self.scope = scope
        self.secure_cookies = secure_cookies
        self.session_ttl = session_ttl
        self._clock = clock

    def cookie_options(self, max_age: float) -> dict[str, Any]:
        """The adapters' ``set_cookie`` options: HttpOnly, SameSite=Lax, Secure unless off."""
        return {
            "max_age": int(max_age),
            "httponly": True,
            "secure": self.secure_cookies,
            "samesite": "Lax",
        }

    # -- the web flow ----------------------------------------------------------------------------

    def start(self, next_path: str | None = None) -> Started:
        """Begin a sign-in; send the browser to ``url`` and set the browser cookie."""
        state, nonce, browser = (secrets.token_urlsafe(32) for _ in range(3))
        self.store.put_pending(
            state,
            PendingSignIn(
                nonce=nonce,
                browser_hash=_hash(browser),
                next_path=safe_next_path(next_path),
                expires_at=self._clock() + SIGN_IN_TTL,
            ),
        )
        url = self.client.authorization_url(
            self.redirect_uri, state=state, nonce=nonce, scope=self.scope
        )
        return Started(url=url, browser_value=browser)

    def callback(self, form: Mapping[str, str] | str) -> str:
        """Apple's form_post: verify it and return the one-time token for ``finish``."""
        try:
            response = parse_authorization_response(form)
        except AppleConnectError as exc:
            raise SignInError("malformed", str(exc)) from exc
        pending = self.store.take_pending(response.state) if response.state else None
        if pending is None:
            raise SignInError("unknown_state", "No sign-in in progress has this state.")
        if pending.expires_at <= self._clock():
            raise SignInError("expired", "The sign-in took too long.")
        if response.error is not None:
            reason = "cancelled" if response.cancelled else "apple_error"
            raise SignInError(reason, response.error)
        try:
            tokens = self.client.exchange_code(response.code or "", redirect_uri=self.redirect_uri)
            if tokens.id_token is None:
                raise SignInError("token", "Apple's token response has no id_token.")
            identity = self.client.verify_identity_token(tokens.id_token, nonce=pending.nonce)
        except AppleConnectError as exc:
            raise SignInError("token", f"{type(exc).__name__}: {exc}") from exc
        user = response.user
        token = secrets.token_urlsafe(32)
        self.store.put_completed(
            token,
            CompletedSignIn(
                browser_hash=pending.browser_hash,
                sub=identity.sub,
                email=identity.email,
                is_private_email=bool(identity.is_private_email),
                first_name=user.first_name if user else None,
                last_name=user.last_name if user else None,
                encrypted_refresh_token=self._encrypt(tokens.refresh_token),
                next_path=pending.next_path,
                expires_at=self._clock() + FINISH_TTL,
            ),
        )
        return token

    def finish(self, token: str, browser_value: str | None) -> Finished:
        """The starting browser is back: link the account and open a session."""
        completed = self.store.take_completed(token) if token else None
        if completed is None:
            raise SignInError("unknown_finish", "No verified sign-in waits under this token.")
        if completed.expires_at <= self._clock():
            raise SignInError("expired", "The browser came back too late.")
        if not browser_value or not hmac.compare_digest(
            _hash(browser_value), completed.browser_hash
        ):
            raise SignInError("browser", "This sign-in was started in another browser.")
        account, created = self._link(completed)
        session = secrets.token_urlsafe(32)
        self.store.create_session(_hash(session), account.sub, self._clock() + self.session_ttl)
        return Finished(account, session, completed.next_path, created)

    def _encrypt(self, refresh_token: str | None) -> str | None:
        return self.cipher.encrypt(refresh_token) if refresh_token else None

    def refresh_token_of(self, account: AppleAccount) -> str | None:
        """The account's Apple refresh token in the clear (``None`` if there is none).

        Raises :class:`~appleconnect.integrations.EncryptionKeyError` when the configured key
        cannot decrypt it."""
        stored = account.encrypted_refresh_token
        return self.cipher.decrypt(stored) if stored else None

    def _link(self, completed: CompletedSignIn) -> tuple[AppleAccount, bool]:
        account = self.store.get_account(completed.sub)
        created = account is None
        if account is None:
            account = AppleAccount(sub=completed.sub)
        if completed.email is not None:
            account.email = completed.email
            account.is_private_email = completed.is_private_email
        if account.first_name is None and account.last_name is None:
            account.first_name, account.last_name = completed.first_name, completed.last_name
        if completed.encrypted_refresh_token is not None:
            account.encrypted_refresh_token = completed.encrypted_refresh_token
        self.store.save_account(account)
        return account, created

    # -- sessions --------------------------------------------------------------------------------

    def account_for_session(self, session_token: str | None) -> AppleAccount | None:
        """The signed-in account for a session cookie's value, or ``None``."""
        if not session_token or len(session_token) > 128:
            return None
        sub = self.store.session_sub(_hash(session_token), self._clock())
        return self.store.get_account(sub) if sub is not None else None

    def sign_out(self, session_token: str | None) -> None:
        """End one session."""
        if session_token:
            self.store.end_session(_hash(session_token))

    # -- notifications and deletion --------------------------------------------------------------

    def handle_notification(self, body: bytes) -> Notification:
        """Verify Apple's server-to-server notification and apply it (once per ``jti``).

        Raises :class:`~appleconnect.InvalidNotification` for anything Apple did not sign.
        """
        if len(body) > MAX_NOTIFICATION_BYTES:
            raise ValueError("The notification body is larger than any Apple sends.")
        notification = parse_notification(body, self.client.keys, audiences=self.client.audiences)
        if not self.store.first_time_seen(notification.jti):
            return notification
        account = self.store.get_account(notification.sub)
        kind = notification.type
        if kind == Notification.CONSENT_REVOKED:
            self.store.end_sessions_of(notification.sub)
            if account is not None:
                account.encrypted_refresh_token = None
        elif kind == Notification.ACCOUNT_DELETED:
            self.store.end_sessions_of(notification.sub)
            self.store.delete_account(notification.sub)
            account = None
        elif kind in (Notification.EMAIL_DISABLED, Notification.EMAIL_ENABLED) and account:
            account.email_forwarding = kind == Notification.EMAIL_ENABLED
        if account is not None:
            self.store.save_account(account)
        logger.info("Apple notification %s applied", kind)
        return notification

    def delete_account(self, sub: str) -> None:
        """Delete the account: revoke its refresh token at Apple, then forget it.

        If Apple cannot be reached, :class:`~appleconnect.AppleUnavailable` is raised and nothing
        is deleted, so that the deletion can be retried; so is
        :class:`~appleconnect.integrations.EncryptionKeyError` when the stored token cannot be
        decrypted with the configured key.
        """
        account = self.store.get_account(sub)
        if account is None:
            return
        refresh_token = self.refresh_token_of(account)
        if refresh_token:
            self.client.revoke(refresh_token)
        self.store.end_sessions_of(sub)
        self.store.delete_account(sub)


def from_environ(environ: Mapping[str, str], *, store: SignInStore) -> AppleSignIn:
    """An :class:`AppleSignIn` configured from environment variables (read once, at start).

    ``APPLE_TEAM_ID``, ``APPLE_KEY_ID``, ``APPLE_PRIVATE_KEY`` (the .p8 file's text; or
    ``APPLE_PRIVATE_KEY_FILE``, its path), ``APPLE_SERVICES_ID``, ``APPLE_REDIRECT_URI``;
    ``APPLE_ENCRYPTION_KEY`` (the Fernet key(s) that encrypt Apple's refresh tokens at rest);
    optional ``APPLE_APP_ID`` (also accepted as audience; notifications are addressed to it),
    ``APPLE_BASE_URL`` (default Apple's; the emulator's URL in development) and
    ``APPLE_INSECURE_COOKIES=1`` (cookies without ``Secure``, for plain-HTTP development only).
    """

    def need(name: str) -> str:
        value = environ.get(name, "").strip()
        if not value:
            raise ValueError(f"Set the environment variable {name} (see docs/integrations.md).")
        return value

    encryption_key = need("APPLE_ENCRYPTION_KEY")
    try:
        TokenCipher(encryption_key)
    except ValueError as exc:
        raise ValueError(f"The environment variable APPLE_ENCRYPTION_KEY is wrong: {exc}") from None
    key = environ.get("APPLE_PRIVATE_KEY", "").strip()
    if not key:
        with open(need("APPLE_PRIVATE_KEY_FILE"), encoding="utf-8") as file:
            key = file.read()
    services_id = need("APPLE_SERVICES_ID")
    app_id = environ.get("APPLE_APP_ID", "").strip()
    client = AppleClient(
        services_id,
        ClientSecret(need("APPLE_TEAM_ID"), need("APPLE_KEY_ID"), services_id, key),
        extra_audiences=[app_id] if app_id else [],
        base_url=environ.get("APPLE_BASE_URL", "").strip() or APPLE_BASE_URL,
    )
    return AppleSignIn(
        client,
        redirect_uri=need("APPLE_REDIRECT_URI"),
        store=store,
        encryption_key=encryption_key,
        secure_cookies=environ.get("APPLE_INSECURE_COOKIES", "") != "1",
    )
