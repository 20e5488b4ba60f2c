"""The clients of Apple's REST API: :class:`AppleClient` (sync) and :class:`AsyncAppleClient`.

Both have the same surface. They build the authorization URL, exchange codes, refresh and revoke
tokens, verify identity tokens with their own cached :class:`AppleKeys`, and run the user
migration (team transfer) calls, following docs/apple-protocol.md:

- every request is ``application/x-www-form-urlencoded`` with ``client_secret_post``
  authentication (docs/apple-protocol.md#quirk-form-encoded-only), ``Accept: application/json``,
  and a timeout;
- Apple's 400 ``{"error": …}`` answers become the :class:`AppleError` subclass for the code,
  with Apple's ``error_description`` kept and logged (docs/pitfalls.md#pitfall-invalid-client);
- anything else that is not Apple's documented answer (5xx, HTML, truncated JSON, a timeout, a
  refused connection, a body over 64 KiB) becomes :class:`AppleUnavailable`, naming the endpoint;
- only calls that are safe to repeat are retried, once, and only when the connection could not
  be established (so Apple never saw the request). A code exchange and a revocation are never
  retried: the code is single-use (docs/pitfalls.md#pitfall-code-used-twice) and the caller
  must decide.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import quote, urlencode, urlsplit

import httpx

from ._constants import (
    APPLE_BASE_URL,
    APPLE_ISSUER,
    AUTHORIZE_PATH,
    CLIENT_SECRET_MAX_TTL,
    MIGRATION_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
)
from ._errors import AppleError, AppleUnavailable, apple_error_from_response
from ._identity import IdentityToken, averify_identity_token
from ._identity import verify_identity_token as _verify_identity_token
from ._jws import decode_unverified
from ._keys import AppleKeys
from ._redirect_uri import redirect_uri_problem
from ._secret import ClientSecret, validate_client_id, validate_team_or_key_id

__all__ = ["AppleClient", "AsyncAppleClient", "MigrationInfo", "TokenResponse"]

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES: Final = 64 * 1024
"""Apple's answers are a few KiB at most; a larger body is refused unread."""

DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=5.0)
"""Used for every request unless ``timeout=`` says otherwise."""

MIGRATION_TOKEN_MARGIN: Final = 60.0
"""A cached migration access token is replaced this many seconds before Apple says it expires."""

MIN_STATE_LENGTH: Final = 16
MAX_STATE_LENGTH: Final = 1024
MAX_TOKEN_ARGUMENT_LENGTH: Final = 16 * 1024

_SCOPES: Final = frozenset({"name", "email", "openid"})
_RESPONSE_MODES: Final = frozenset({"query", "fragment", "form_post"})
_TOKEN_TYPE_HINTS: Final = frozenset({"refresh_token", "access_token"})
_FORM_HEADERS: Final = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
}

ResponseMode = Literal["query", "fragment", "form_post"]
TokenTypeHint = Literal["refresh_token", "access_token"]


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """What Apple's token endpoint answered (docs/apple-protocol.md#token).

    ``refresh_token`` is present after a code exchange only. A refresh (``grant_type=
    refresh_token``) does not return a new one: keep using, and keep storing, the one you have.
    ``id_token`` still needs verifying (:meth:`AppleClient.verify_identity_token`; pass
    ``access_token=`` to check its ``at_hash``). ``raw`` is Apple's JSON as received.
    The tokens are left out of ``repr()`` so that logging the object leaks nothing.
    """

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    refresh_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class MigrationInfo:
    """The recipient team's view of a transferred user (``/auth/usermigrationinfo``, step B).

    ``sub`` is the user's identifier in the new team. ``email`` is present only when the user
    had a private relay address: it is the new team's relay address. ``is_private_email`` is a
    real boolean whether Apple sent ``true`` or ``"true"`` (``None`` when absent).
    """

    sub: str
    email: str | None = field(repr=False)
    is_private_email: bool | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Call:
    """One request to Apple, described independently of sync or async I/O."""

    endpoint: str
    """Human name used in messages, e.g. ``"token endpoint (authorization_code)"``."""
    path: str
    form: dict[str, str]
    bearer: str | None = None
    retry_on_connect_error: bool = False
    allow_empty_body: bool = False
    failure_hint: str = ""


class _BodyTooLarge(Exception):
    pass


class _BaseClient:
    """Configuration, request building and response parsing shared by both clients."""

    _keys: AppleKeys
    _owns_keys: bool

    def __init__(
        self,
        client_id: str,
        client_secret: ClientSecret | str,
        *,
        extra_audiences: Iterable[str],
        base_url: str,
        timeout: float | httpx.Timeout | None,
        clock: Callable[[], float],
    ) -> None:
        team_id = client_secret.team_id if isinstance(client_secret, ClientSecret) else None
        self.client_id: str = _check_client_id(client_id, team_id)
        self._clock = clock
        self._secret: ClientSecret | str
        self._secret_expires_at: int | None = None
        if isinstance(client_secret, ClientSecret):
            if client_secret.client_id != self.client_id:
                raise ValueError(
                    f"The ClientSecret was made for {client_secret.client_id!r} but the client "
                    f"is for {self.client_id!r}; Apple requires the secret's sub to equal the "
                    f"client_id (use secret.with_client_id({self.client_id!r}))."
                )
            self._secret = client_secret
        elif isinstance(client_secret, str):
            # A secret pasted into an environment variable often gains a newline or quotes.
            client_secret = client_secret.strip().strip("'\"").strip()
            self._secret_expires_at = _check_static_secret(client_secret, self.client_id, clock())
            self._secret = client_secret
        else:
            raise TypeError(
                "client_secret must be a ClientSecret (recommended: re-minted automatically) or "
                f"a pre-made client secret string, not {type(client_secret).__name__}."
            )

        if isinstance(extra_audiences, str):
            raise TypeError(
                "extra_audiences must be a list of client ids, not one string "
                f"(write extra_audiences=[{extra_audiences!r}])."
            )
        audiences = [self.client_id]
        for audience in extra_audiences:
            audience = _check_client_id(audience, team_id)
            if audience not in audiences:
                audiences.append(audience)
        self.audiences: tuple[str, ...] = tuple(audiences)
        # Verification takes a frozenset built once (the fast path of verify_identity_token).
        self._allowed_audiences = frozenset(audiences)
        """Every ``aud`` an identity token may carry: ``client_id`` first, then the extras."""

        self.base_url: str = _check_base_url(base_url)
        self._is_apple = self.base_url == APPLE_BASE_URL
        if timeout is None:
            raise ValueError("timeout=None would let a request hang forever; give a number.")
        if not isinstance(timeout, httpx.Timeout):
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}.")
            timeout = httpx.Timeout(float(timeout))
        self._timeout: httpx.Timeout = timeout
        self._migration_token: tuple[str, float] | None = None

    # -- configuration -------------------------------------------------------------------

    @property
    def client_secret(self) -> ClientSecret | str:
        """The client secret this client sends: the :class:`ClientSecret` it mints from (whose
        ``expires_at`` tells when the current secret expires) or the pre-made string."""
        return self._secret

    @property
    def client_secret_expires_at(self) -> int | None:
        """Unix time at which a pre-made secret string expires.

        ``None`` for a :class:`ClientSecret` (it re-mints itself before expiry) and for a string
        whose claims could not be read. Alert well before this moment: after it, every call
        fails (docs/pitfalls.md#pitfall-secret-expiry).
        """
        return self._secret_expires_at

    @property
    def keys(self) -> AppleKeys:
        """The :class:`AppleKeys` this client verifies identity tokens with."""
        return self._keys

    def _secret_value(self) -> str:
        if isinstance(self._secret, ClientSecret):
            return self._secret.token
        expires_at = self._secret_expires_at
        if expires_at is not None and self._clock() >= expires_at:
            raise ValueError(
                f"The pre-made client secret expired at Unix time {expires_at}; Apple would "
                "answer invalid_client. Mint a new one (`appleconnect secret`), or pass a "
                "ClientSecret so that it is re-minted automatically."
            )
        return self._secret

    def _url(self, path: str) -> str:
        return self.base_url + path

    # -- the authorization URL -----------------------------------------------------------

    def authorization_url(
        self,
        redirect_uri: str,
        *,
        state: str,
        scope: Sequence[str] | str | None = ("name", "email"),
        nonce: str | None = None,
        response_mode: ResponseMode | None = None,
        response_type: str = "code",
    ) -> str:
        """Return the URL of Apple's ``/auth/authorize`` to send the browser to.

        Apple's rules are applied here rather than discovered at the callback
        (docs/apple-protocol.md#authorize):

        - any ``scope`` forces ``response_mode=form_post``; asking for ``query`` or ``fragment``
          with scopes raises :class:`ValueError`. Without scopes the default is ``query``, or
          ``form_post`` when an ``id_token`` is requested;
        - ``response_type`` is ``"code"`` or ``"code id_token"``; ``id_token`` alone is not
          supported by Apple, and ``code id_token`` needs ``fragment`` or ``form_post``;
        - ``state`` is required, at least 16 characters and random-looking (make it with
          ``secrets.token_urlsafe(32)`` and store it server-side); a missing, short or constant
          state raises :class:`ValueError`. A ``nonce``, if given, follows the same rule;
        - ``redirect_uri`` must be absolute and without a fragment; against Apple's real servers
          it must also use HTTPS and a domain name (no IP address, no ``localhost``).

        Parameters are percent-encoded as Apple expects (``name%20email``, ``code%20id_token``).
        """
        self._check_redirect_uri(redirect_uri)
        scopes = _normalise_scope(scope)
        response_type = _normalise_response_type(response_type)
        if response_mode is None:
            response_mode = "form_post" if scopes or response_type != "code" else "query"
        if response_mode not in _RESPONSE_MODES:
            raise ValueError(
                f"response_mode must be one of 'query', 'fragment' or 'form_post'; got "
                f"{response_mode!r}."
            )
        if scopes and response_mode != "form_post":
            raise ValueError(
                f"Apple requires response_mode='form_post' whenever a scope is requested; got "
                f"response_mode={response_mode!r} with scope {' '.join(scopes)!r}. Use form_post "
                "(and a callback that accepts a cross-site POST), or request no scope."
            )
        if response_type != "code" and response_mode == "query":
            raise ValueError(
                "response_type='code id_token' needs response_mode 'form_post' or 'fragment'; "
                "Apple does not put an id_token in a query string."
            )
        _check_random_value("state", state)
        params: list[tuple[str, str]] = [
            ("client_id", self.client_id),
            ("redirect_uri", redirect_uri),
            ("response_type", response_type),
            ("response_mode", response_mode),
            ("state", state),
        ]
        if scopes:
            params.append(("scope", " ".join(scopes)))
        if nonce is not None:
            _check_random_value("nonce", nonce)
            params.append(("nonce", nonce))
        # quote (not quote_plus): Apple's documentation writes spaces as %20.
        query = urlencode(params, quote_via=quote, safe="")
        return f"{self._url(AUTHORIZE_PATH)}?{query}"

    def _check_redirect_uri(self, redirect_uri: str) -> None:
        if not isinstance(redirect_uri, str):
            raise TypeError(f"redirect_uri must be a string, not {type(redirect_uri).__name__}.")
        # The emulator (sandbox, tests) accepts plain HTTP and localhost; Apple does not.
        problem = redirect_uri_problem(redirect_uri, sandbox=not self._is_apple)
        if problem:
            raise ValueError(f"Apple would refuse the redirect_uri {redirect_uri!r}: {problem}.")

    # -- request building ----------------------------------------------------------------

    def _client_form(self) -> dict[str, str]:
        return {"client_id": self.client_id, "client_secret": self._secret_value()}

    def _exchange_call(
        self, code: str, redirect_uri: str | None, code_verifier: str | None
    ) -> _Call:
        _check_token_argument("code", code)
        form = {"grant_type": "authorization_code", "code": code, **self._client_form()}
        if redirect_uri is not None:
            self._check_redirect_uri(redirect_uri)
            form["redirect_uri"] = redirect_uri
        if code_verifier is not None:
            _check_token_argument("code_verifier", code_verifier)
            form["code_verifier"] = code_verifier
        return _Call(
            endpoint="token endpoint (authorization_code)",
            path=TOKEN_PATH,
            form=form,
            failure_hint=(
                " Apple may have consumed the code: do not retry with it (codes are single-use "
                "and valid for 5 minutes); start a new sign-in instead."
            ),
        )

    def _refresh_call(self, refresh_token: str) -> _Call:
        _check_token_argument("refresh_token", refresh_token)
        return _Call(
            endpoint="token endpoint (refresh_token)",
            path=TOKEN_PATH,
            form={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                **self._client_form(),
            },
            # A refresh is idempotent at Apple (the refresh token stays valid), so a request
            # that never reached Apple can safely be sent once more.
            retry_on_connect_error=True,
        )

    def _revoke_call(self, token: str, token_type_hint: str) -> _Call:
        _check_token_argument("token", token)
        if token_type_hint not in _TOKEN_TYPE_HINTS:
            raise ValueError(
                "token_type_hint must be 'refresh_token' or 'access_token' (Apple revokes only "
                f"those; revoking an id_token gives invalid_client); got {token_type_hint!r}."
            )
        return _Call(
            endpoint="revoke endpoint",
            path=REVOKE_PATH,
            form={"token": token, "token_type_hint": token_type_hint, **self._client_form()},
            allow_empty_body=True,
            failure_hint=(
                " Whether the token was revoked is unknown; revoking it again is harmless "
                "(Apple answers 200 for a token that is already invalid)."
            ),
        )

    def _migration_token_call(self) -> _Call:
        return _Call(
            endpoint="token endpoint (client_credentials, user.migration)",
            path=TOKEN_PATH,
            form={
                "grant_type": "client_credentials",
                "scope": "user.migration",
                **self._client_form(),
            },
            # TN3159: this request is not rate-limited and has no side effect.
            retry_on_connect_error=True,
        )

    def _transfer_sub_call(self, sub: str, target_team_id: str, access_token: str) -> _Call:
        _check_token_argument("sub", sub)
        target = validate_team_or_key_id(target_team_id, "Team ID")
        if isinstance(self._secret, ClientSecret) and target == self._secret.team_id:
            raise ValueError(
                f"target_team_id {target!r} is this client's own team; transfer identifiers "
                "are generated by the sending team for the recipient team."
            )
        return _Call(
            endpoint="user migration endpoint (sub → transfer_sub)",
            path=MIGRATION_PATH,
            form={"sub": sub, "target": target, **self._client_form()},
            bearer=access_token,
            retry_on_connect_error=True,
        )

    def _sub_for_transfer_call(self, transfer_sub: str, access_token: str) -> _Call:
        _check_token_argument("transfer_sub", transfer_sub)
        return _Call(
            endpoint="user migration endpoint (transfer_sub → sub)",
            path=MIGRATION_PATH,
            form={"transfer_sub": transfer_sub, **self._client_form()},
            bearer=access_token,
            retry_on_connect_error=True,
        )

    def _headers(self, call: _Call) -> dict[str, str]:
        headers = dict(_FORM_HEADERS)
        if call.bearer is not None:
            headers["Authorization"] = f"Bearer {call.bearer}"
        return headers

    @staticmethod
    def _body(call: _Call) -> bytes:
        return urlencode(call.form).encode("ascii")

    # -- migration token cache -----------------------------------------------------------

    def _cached_migration_token(self) -> str | None:
        cached = self._migration_token
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        return None

    def _store_migration_token(self, response: TokenResponse) -> str:
        self._migration_token = (
            response.access_token,
            self._clock() + response.expires_in - MIGRATION_TOKEN_MARGIN,
        )
        return response.access_token

    # -- response handling ---------------------------------------------------------------

    def _interpret(self, call: _Call, status: int, body: bytes) -> dict[str, Any] | None:
        where = f"Apple's {call.endpoint} ({self._url(call.path)})"
        if 200 <= status < 300:
            if call.allow_empty_body:
                return None
            data = _json_object(body)
            if data is None:
                raise self._unavailable(
                    f"{where} answered HTTP {status} with a body that is not a JSON object."
                )
            return data
        if 400 <= status < 500:
            data = _json_object(body)
            error = data.get("error") if data is not None else None
            if isinstance(error, str) and error:
                description = data.get("error_description") if data is not None else None
                if not isinstance(description, str) or not description:
                    description = None
                exc = apple_error_from_response(
                    _loggable(error, 64),
                    _loggable(description, 512) if description else None,
                    status,
                )
                logger.warning(
                    "%s refused the request: %s%s",
                    where,
                    exc.error,
                    f" ({exc.error_description})" if exc.error_description else "",
                )
                raise exc
            throttled = " (throttled: retry later)" if status == 429 else ""
            raise self._unavailable(
                f"{where} answered HTTP {status}{throttled} without Apple's JSON error body."
                + call.failure_hint
            )
        raise self._unavailable(
            f"{where} answered HTTP {status}; Apple is unavailable, retry later."
            + call.failure_hint
        )

    @staticmethod
    def _unavailable(message: str) -> AppleUnavailable:
        logger.warning("%s", message)
        return AppleUnavailable(message)

    def _transport_error(self, call: _Call, exc: Exception) -> AppleUnavailable:
        where = f"Apple's {call.endpoint} ({self._url(call.path)})"
        if isinstance(exc, _BodyTooLarge):
            message = f"{where} answered with a body larger than {MAX_RESPONSE_BYTES} bytes."
        elif isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
            message = f"Could not connect to {where}: {type(exc).__name__}: {exc}."
        elif isinstance(exc, httpx.TimeoutException):
            message = f"{where} did not answer in time ({type(exc).__name__})." + call.failure_hint
        else:
            message = f"The request to {where} failed: {type(exc).__name__}: {exc}."
            message += call.failure_hint
        return self._unavailable(message)

    def _token_response(self, call: _Call, data: dict[str, Any] | None) -> TokenResponse:
        assert data is not None
        where = f"Apple's {call.endpoint}"
        access_token = _required_str(where, data, "access_token")
        token_type = _required_str(where, data, "token_type")
        expires_in = data.get("expires_in")
        if isinstance(expires_in, float) and expires_in.is_integer():
            expires_in = int(expires_in)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 0:
            raise self._unavailable(
                f"{where} answered HTTP 200 but expires_in is not a number of seconds."
            )
        return TokenResponse(
            access_token=access_token,
            token_type=token_type,
            expires_in=expires_in,
            refresh_token=_optional_str(where, data, "refresh_token"),
            id_token=_optional_str(where, data, "id_token"),
            raw=data,
        )

    def _transfer_sub(self, call: _Call, data: dict[str, Any] | None) -> str:
        assert data is not None
        return _required_str(f"Apple's {call.endpoint}", data, "transfer_sub")

    def _migration_info(self, call: _Call, data: dict[str, Any] | None) -> MigrationInfo:
        assert data is not None
        where = f"Apple's {call.endpoint}"
        private = data.get("is_private_email")
        if isinstance(private, str) and private in ("true", "false"):
            private = private == "true"
        if private is not None and not isinstance(private, bool):
            raise self._unavailable(f"{where} answered HTTP 200 but is_private_email is garbled.")
        return MigrationInfo(
            sub=_required_str(where, data, "sub"),
            email=_optional_str(where, data, "email"),
            is_private_email=private,
            raw=data,
        )


class AppleClient(_BaseClient):
    """A synchronous client of Apple's Sign in with Apple REST API.

    >>> secret = ClientSecret(TEAM_ID, KEY_ID, "com.example.web", p8)  # doctest: +SKIP
    >>> with AppleClient("com.example.web", secret) as apple:  # doctest: +SKIP
    ...     tokens = apple.exchange_code(code, redirect_uri="https://example.com/callback")
    ...     identity = apple.verify_identity_token(tokens.id_token, nonce=nonce)

    ``client_id`` is the Services ID (web) or App ID / bundle ID (native) that the codes are
    issued to; ``extra_audiences`` adds client ids whose identity tokens this client also
    accepts (the App ID beside the Services ID). ``client_secret`` is a :class:`ClientSecret`
    (re-minted automatically) or a pre-made secret string, whose ``sub`` must equal
    ``client_id`` and whose expiry is exposed as :attr:`client_secret_expires_at`.
    ``base_url`` points at Apple by default, or at the emulator. ``http_client`` is an
    ``httpx.Client`` to use (closed by you, not by this object); ``keys`` an
    :class:`AppleKeys` to share. ``timeout`` applies to every request. ``clock`` returns Unix
    time in seconds.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: ClientSecret | str,
        *,
        extra_audiences: Iterable[str] = (),
        base_url: str = APPLE_BASE_URL,
        http_client: httpx.Client | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        keys: AppleKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            client_id,
            client_secret,
            extra_audiences=extra_audiences,
            base_url=base_url,
            timeout=timeout,
            clock=clock,
        )
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError(
                "AppleClient needs an httpx.Client; for an httpx.AsyncClient use AsyncAppleClient."
            )
        self._owns_http = http_client is None
        self._http: httpx.Client = (
            http_client
            if http_client is not None
            else httpx.Client(timeout=self._timeout, follow_redirects=False)
        )
        self._owns_keys = keys is None
        self._keys = (
            keys if keys is not None else AppleKeys(base_url=self.base_url, http_client=self._http)
        )
        self._migration_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP client and key cache if this object created them."""
        if self._owns_keys:
            self._keys.close()
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> AppleClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- API -----------------------------------------------------------------------------

    def exchange_code(
        self, code: str, *, redirect_uri: str | None = None, code_verifier: str | None = None
    ) -> TokenResponse:
        """Exchange an authorization code at ``/auth/token`` (``grant_type=authorization_code``).

        Pass the same ``redirect_uri`` as in the authorization URL for web codes; leave it out
        for codes from a native app (whose client_id is the bundle ID). The code is single-use
        and valid for 5 minutes, so this call is never retried: on :class:`AppleUnavailable`
        start a new sign-in. Raises :class:`InvalidGrant` for an expired or used code,
        :class:`InvalidClient` for a secret or client id Apple refuses.
        """
        call = self._exchange_call(code, redirect_uri, code_verifier)
        return self._token_response(call, self._send(call))

    def refresh(self, refresh_token: str) -> TokenResponse:
        """Validate a refresh token at ``/auth/token`` (``grant_type=refresh_token``).

        Apple returns a new access token and id_token but **no new refresh token**: the returned
        ``refresh_token`` is ``None``, keep the one you have. Apple asks for this at most once a
        day per user and may throttle more. :class:`InvalidGrant` means the user revoked the
        app, changed their password or deleted the account: end their session.
        """
        call = self._refresh_call(refresh_token)
        return self._token_response(call, self._send(call))

    def revoke(self, token: str, *, token_type_hint: TokenTypeHint = "refresh_token") -> None:  # noqa: S107
        """Revoke a refresh token or access token at ``/auth/revoke``.

        Returns on Apple's empty 200, which Apple also sends for a token that was already
        invalid. Only refresh and access tokens can be revoked: an id_token gets
        ``invalid_client`` from Apple. Not retried; on :class:`AppleUnavailable` calling it
        again is harmless.
        """
        call = self._revoke_call(token, token_type_hint)
        self._send(call)

    def verify_identity_token(
        self,
        token: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        code: str | None = None,
        now: float | None = None,
    ) -> IdentityToken:
        """Verify an identity token against this client's audiences and cached Apple keys.

        The audiences are :attr:`audiences` (``client_id`` and ``extra_audiences``); they are
        never taken from the request. Pass the ``nonce`` you sent (raw; its SHA-256 is accepted
        too, as native apps send it hashed), and ``access_token`` / ``code`` to check
        ``at_hash`` / ``c_hash``. Raises :class:`InvalidIdentityToken` naming the failed check.
        """
        return _verify_identity_token(
            token,
            self._keys,
            audiences=self._allowed_audiences,
            nonce=nonce,
            now=self._clock() if now is None else now,
            access_token=access_token,
            code=code,
        )

    def migration_access_token(self) -> str:
        """An access token for user migration (``client_credentials``, ``scope=user.migration``).

        Cached until shortly before Apple's ``expires_in``; concurrent callers share one fetch.
        """
        token = self._cached_migration_token()
        if token is not None:
            return token
        with self._migration_lock:
            token = self._cached_migration_token()
            if token is not None:
                return token
            call = self._migration_token_call()
            return self._store_migration_token(self._token_response(call, self._send(call)))

    def transfer_sub_for(
        self, sub: str, target_team_id: str, *, access_token: str | None = None
    ) -> str:
        """Sending team: the ``transfer_sub`` of this team's user ``sub`` for the recipient team.

        Export only the ``transfer_sub`` to the recipient, never the ``sub`` or relay email.
        ``access_token`` defaults to :meth:`migration_access_token`.
        """
        bearer = access_token or self.migration_access_token()
        call = self._transfer_sub_call(sub, target_team_id, bearer)
        return self._transfer_sub(call, self._send_migration(call, access_token is None))

    def sub_for_transfer(
        self, transfer_sub: str, *, access_token: str | None = None
    ) -> MigrationInfo:
        """Recipient team: the new ``sub`` (and relay email) for a sending team's ``transfer_sub``.

        Works for 60 days after the transfer. ``access_token`` defaults to
        :meth:`migration_access_token`.
        """
        bearer = access_token or self.migration_access_token()
        call = self._sub_for_transfer_call(transfer_sub, bearer)
        return self._migration_info(call, self._send_migration(call, access_token is None))

    # -- I/O -----------------------------------------------------------------------------

    def _send_migration(self, call: _Call, cached_token: bool) -> dict[str, Any] | None:
        try:
            return self._send(call)
        except AppleError:
            if cached_token:
                # The cached access token may be the cause; fetch a fresh one next time.
                self._migration_token = None
            raise

    def _send(self, call: _Call) -> dict[str, Any] | None:
        attempts = 2 if call.retry_on_connect_error else 1
        for attempt in range(1, attempts + 1):
            try:
                status, body = self._transmit(call)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt < attempts:
                    logger.info("Retrying Apple's %s once: %s", call.endpoint, type(exc).__name__)
                    continue
                raise self._transport_error(call, exc) from exc
            except (httpx.HTTPError, _BodyTooLarge) as exc:
                raise self._transport_error(call, exc) from exc
            return self._interpret(call, status, body)
        raise AssertionError("unreachable")  # pragma: no cover

    def _transmit(self, call: _Call) -> tuple[int, bytes]:
        with self._http.stream(
            "POST",
            self._url(call.path),
            content=self._body(call),
            headers=self._headers(call),
            timeout=self._timeout,
        ) as response:
            _check_declared_length(response)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise _BodyTooLarge
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)


class AsyncAppleClient(_BaseClient):
    """The asynchronous twin of :class:`AppleClient`: same arguments, same methods, awaited.

    ``http_client`` is an ``httpx.AsyncClient``. :meth:`authorization_url` is a plain method
    (it does no I/O). Use ``async with`` or :meth:`aclose`.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: ClientSecret | str,
        *,
        extra_audiences: Iterable[str] = (),
        base_url: str = APPLE_BASE_URL,
        http_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        keys: AppleKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            client_id,
            client_secret,
            extra_audiences=extra_audiences,
            base_url=base_url,
            timeout=timeout,
            clock=clock,
        )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(
                "AsyncAppleClient needs an httpx.AsyncClient; for an httpx.Client use AppleClient."
            )
        self._owns_http = http_client is None
        self._http: httpx.AsyncClient = (
            http_client
            if http_client is not None
            else httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        )
        self._owns_keys = keys is None
        self._keys = (
            keys
            if keys is not None
            else AppleKeys(base_url=self.base_url, async_http_client=self._http)
        )
        self._migration_lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the HTTP client and key cache if this object created them."""
        if self._owns_keys:
            await self._keys.aclose()
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncAppleClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def exchange_code(
        self, code: str, *, redirect_uri: str | None = None, code_verifier: str | None = None
    ) -> TokenResponse:
        """Async :meth:`AppleClient.exchange_code` (never retried; the code is single-use)."""
        call = self._exchange_call(code, redirect_uri, code_verifier)
        return self._token_response(call, await self._send(call))

    async def refresh(self, refresh_token: str) -> TokenResponse:
        """Async :meth:`AppleClient.refresh`: no new refresh token comes back, keep the old one."""
        call = self._refresh_call(refresh_token)
        return self._token_response(call, await self._send(call))

    async def revoke(self, token: str, *, token_type_hint: TokenTypeHint = "refresh_token") -> None:  # noqa: S107
        """Async :meth:`AppleClient.revoke` (refresh or access tokens only; never retried)."""
        call = self._revoke_call(token, token_type_hint)
        await self._send(call)

    async def verify_identity_token(
        self,
        token: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        code: str | None = None,
        now: float | None = None,
    ) -> IdentityToken:
        """Async :meth:`AppleClient.verify_identity_token` (keys fetched without blocking)."""
        return await averify_identity_token(
            token,
            self._keys,
            audiences=self._allowed_audiences,
            nonce=nonce,
            now=self._clock() if now is None else now,
            access_token=access_token,
            code=code,
        )

    async def migration_access_token(self) -> str:
        """Async :meth:`AppleClient.migration_access_token` (cached; one shared fetch)."""
        token = self._cached_migration_token()
        if token is not None:
            return token
        async with self._migration_lock:
            token = self._cached_migration_token()
            if token is not None:
                return token
            call = self._migration_token_call()
            return self._store_migration_token(self._token_response(call, await self._send(call)))

    async def transfer_sub_for(
        self, sub: str, target_team_id: str, *, access_token: str | None = None
    ) -> str:
        """Async :meth:`AppleClient.transfer_sub_for` (sending team)."""
        bearer = access_token or await self.migration_access_token()
        call = self._transfer_sub_call(sub, target_team_id, bearer)
        return self._transfer_sub(call, await self._send_migration(call, access_token is None))

    async def sub_for_transfer(
        self, transfer_sub: str, *, access_token: str | None = None
    ) -> MigrationInfo:
        """Async :meth:`AppleClient.sub_for_transfer` (recipient team)."""
        bearer = access_token or await self.migration_access_token()
        call = self._sub_for_transfer_call(transfer_sub, bearer)
        return self._migration_info(call, await self._send_migration(call, access_token is None))

    async def _send_migration(self, call: _Call, cached_token: bool) -> dict[str, Any] | None:
        try:
            return await self._send(call)
        except AppleError:
            if cached_token:
                self._migration_token = None
            raise

    async def _send(self, call: _Call) -> dict[str, Any] | None:
        attempts = 2 if call.retry_on_connect_error else 1
        for attempt in range(1, attempts + 1):
            try:
                status, body = await self._transmit(call)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt < attempts:
                    logger.info("Retrying Apple's %s once: %s", call.endpoint, type(exc).__name__)
                    continue
                raise self._transport_error(call, exc) from exc
            except (httpx.HTTPError, _BodyTooLarge) as exc:
                raise self._transport_error(call, exc) from exc
            return self._interpret(call, status, body)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _transmit(self, call: _Call) -> tuple[int, bytes]:
        async with self._http.stream(
            "POST",
            self._url(call.path),
            content=self._body(call),
            headers=self._headers(call),
            timeout=self._timeout,
        ) as response:
            _check_declared_length(response)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise _BodyTooLarge
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)


# -- helpers -------------------------------------------------------------------------------


def _check_declared_length(response: httpx.Response) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise _BodyTooLarge


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _optional_str(where: str, data: Mapping[str, Any], name: str) -> str | None:
    if data.get(name) is None:
        return None
    return _required_str(where, data, name)


def _required_str(where: str, data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if isinstance(value, str) and value:
        return value
    problem = "missing" if value is None else "not a non-empty string"
    message = f"{where} answered HTTP 200 but its {name} is {problem}."
    logger.warning("%s", message)
    raise AppleUnavailable(message)


def _loggable(text: str, cap: int) -> str:
    """Apple's text, with control characters replaced and capped, safe for one log line."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= cap else cleaned[: cap - 1] + "…"


_TEAM_ID_PREFIX = re.compile(r"[A-Z0-9]{10}\.")


def _check_client_id(client_id: str, team_id: str | None) -> str:
    client_id = validate_client_id(client_id, team_id)
    # "ABCDE12345.com.example.app" is the App ID prefix form that Xcode shows; Apple wants the
    # identifier without it (docs/apple-protocol.md#quirk-client-id-no-team-id). Caught even
    # when the Team ID is unknown (a pre-made secret string).
    if _TEAM_ID_PREFIX.match(client_id):
        raise ValueError(
            f"The client id {client_id!r} starts with what looks like a Team ID; Apple wants the "
            f"identifier without it ({client_id[11:]!r})."
        )
    return client_id


def _check_base_url(base_url: str) -> str:
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string, not {type(base_url).__name__}.")
    stripped = base_url.rstrip("/")
    parts = urlsplit(stripped)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(
            f"base_url must be an http(s) URL without query or fragment, such as "
            f"{APPLE_BASE_URL!r} or the emulator's 'http://127.0.0.1:8080'; got {base_url!r}."
        )
    return stripped


def _check_static_secret(secret: str, client_id: str, now: float) -> int | None:
    """Check a pre-made client secret's claims when they are readable; return its ``exp``."""
    if not secret or any(ch.isspace() or not ch.isprintable() for ch in secret):
        raise ValueError("The client secret string is empty or contains spaces or line breaks.")
    try:
        _header, claims, _signature = decode_unverified(secret)
    except (ValueError, RecursionError):
        return None  # not readable as a JWT: Apple will judge it
    sub = claims.get("sub")
    if sub is not None and sub != client_id:
        raise ValueError(
            f"The client secret's sub is {sub!r} but the client_id is {client_id!r}; Apple "
            "requires them to be identical (invalid_client otherwise)."
        )
    aud = claims.get("aud")
    if aud is not None and aud != APPLE_ISSUER:
        raise ValueError(
            f"The client secret's aud is {aud!r}; Apple requires {APPLE_ISSUER!r} "
            "(invalid_client otherwise)."
        )
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int):
        return None
    iat = claims.get("iat")
    if isinstance(iat, int) and not isinstance(iat, bool) and exp - iat > CLIENT_SECRET_MAX_TTL:
        raise ValueError(
            f"The client secret is valid for {exp - iat} s; Apple refuses more than "
            f"{CLIENT_SECRET_MAX_TTL} s (about six months) with invalid_client."
        )
    if exp <= now:
        raise ValueError(
            f"The client secret expired at Unix time {exp}; mint a new one "
            "(`appleconnect secret`), or pass a ClientSecret so that it is re-minted "
            "automatically."
        )
    return exp


def _normalise_scope(scope: Sequence[str] | str | None) -> list[str]:
    if scope is None:
        return []
    items = scope.split() if isinstance(scope, str) else list(scope)
    scopes: list[str] = []
    for item in items:
        if not isinstance(item, str) or item not in _SCOPES:
            raise ValueError(
                f"Unknown scope {item!r}: Apple accepts 'name' and 'email' (and 'openid'); "
                "'names' fails outside Safari."
            )
        if item not in scopes:
            scopes.append(item)
    return scopes


def _normalise_response_type(response_type: str) -> str:
    if not isinstance(response_type, str):
        raise TypeError("response_type must be a string such as 'code' or 'code id_token'.")
    parts = set(response_type.split())
    if parts == {"code"}:
        return "code"
    if parts == {"code", "id_token"}:
        return "code id_token"
    if parts == {"id_token"}:
        raise ValueError(
            "Apple does not support response_type='id_token' alone; use 'code id_token' "
            "(and exchange the code) or 'code'."
        )
    raise ValueError(f"response_type must be 'code' or 'code id_token'; got {response_type!r}.")


def _check_random_value(name: str, value: object) -> None:
    if value is None or value == "":
        raise ValueError(
            f"A {name} is required: generate one per sign-in with secrets.token_urlsafe(32) "
            "and keep it server-side to compare with what Apple sends back."
        )
    if not isinstance(value, str):
        raise TypeError(f"The {name} must be a string, not {type(value).__name__}.")
    if len(value) < MIN_STATE_LENGTH:
        raise ValueError(
            f"The {name} is {len(value)} characters; use at least {MIN_STATE_LENGTH} random "
            "characters (secrets.token_urlsafe(32))."
        )
    if len(value) > MAX_STATE_LENGTH:
        raise ValueError(f"The {name} is longer than {MAX_STATE_LENGTH} characters.")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"The {name} contains spaces or control characters.")
    if _looks_constant(value):
        raise ValueError(
            f"The {name} {value!r} looks constant (repeated or sequential characters); it must "
            "be random for each sign-in (secrets.token_urlsafe(32)), or it protects nothing."
        )


def _looks_constant(value: str) -> bool:
    """Heuristics for values that are obviously not random: three distinct characters or fewer,
    a short pattern repeated (``statestatestate…``), or a run of consecutive characters
    (``0123…``). Not "fewer than six": 16 random hex digits (``secrets.token_hex(8)``, the
    shortest state allowed) have five or fewer distinct ones about once in 32,000 draws
    (``d602d062fdd2d06f``); three or fewer, about once in 770 million."""
    if len(set(value)) < 4:
        return True
    if value in (value + value)[1:-1]:  # periodic string
        return True
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(value)}
    return steps <= {1} or steps <= {-1}


def _check_token_argument(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}.")
    if not value or value != value.strip():
        raise ValueError(f"{name} is empty or has surrounding whitespace.")
    if len(value) > MAX_TOKEN_ARGUMENT_LENGTH:
        raise ValueError(f"{name} is longer than {MAX_TOKEN_ARGUMENT_LENGTH} characters.")
