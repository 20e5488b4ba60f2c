"""The exceptions that appleconnect raises.

Every exception derives from :class:`AppleConnectError`::

    AppleConnectError
    ├── AppleError                    Apple answered with an OAuth error (HTTP 400 JSON).
    │   ├── InvalidRequest            ``invalid_request``
    │   ├── InvalidClient             ``invalid_client`` (the message lists the usual causes)
    │   ├── InvalidGrant              ``invalid_grant``
    │   ├── UnauthorizedClient        ``unauthorized_client``
    │   ├── UnsupportedGrantType      ``unsupported_grant_type``
    │   └── InvalidScope              ``invalid_scope``
    ├── AppleUnavailable              Apple could not be reached or answered something unusable.
    │   └── KeysUnavailable           ...its key set, so a token's unknown ``kid`` is undecidable.
    ├── InvalidToken                  A JWT from Apple failed verification (carries ``reason``).
    │   ├── InvalidIdentityToken      ...an identity token.
    │   └── InvalidNotification       ...a server-to-server notification.
    └── InvalidAuthorizationResponse  The redirect or form_post from Apple is malformed.

Mistakes in configuration (a malformed .p8 key, a Team ID of the wrong length, a constant
``state``) raise :class:`ValueError` or :class:`TypeError` with a sentence that says how to fix
them: they are bugs to fix, not conditions to handle at run time.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AppleConnectError",
    "AppleError",
    "AppleUnavailable",
    "InvalidAuthorizationResponse",
    "InvalidClient",
    "InvalidGrant",
    "InvalidIdentityToken",
    "InvalidNotification",
    "InvalidRequest",
    "InvalidScope",
    "InvalidToken",
    "KeysUnavailable",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "apple_error_from_response",
]


class AppleConnectError(Exception):
    """Base class of every exception that appleconnect raises on purpose."""


class AppleError(AppleConnectError):
    """Raised when Apple refuses a request with an OAuth error body.

    ``error`` is Apple's code, ``error_description`` its (optional) explanation and
    ``status_code`` the HTTP status, usually 400 even for ``invalid_client`` (TN3107).
    """

    code: ClassVar[str] = ""

    def __init__(
        self, error: str, error_description: str | None = None, status_code: int = 400
    ) -> None:
        self.error = error
        self.error_description = error_description
        self.status_code = status_code
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"Apple refused the request: {self.error}"
        if self.error_description:
            text += f" ({self.error_description})"
        return text


class InvalidRequest(AppleError):
    """Raised for ``invalid_request``: a parameter is missing, repeated or malformed, the body is
    not form-encoded, or the user revoked authorization for this client."""

    code = "invalid_request"


class InvalidClient(AppleError):
    """Raised for ``invalid_client``: Apple did not accept the client id or the client secret.

    Apple never says why; the message lists the causes that ``appleconnect doctor`` checks, in
    the order in which they are usually found.
    """

    code = "invalid_client"
    likely_causes: ClassVar[tuple[str, ...]] = (
        "the private key does not belong to the Key ID (several keys in one account)",
        "the Team ID (the secret's iss) is not the team that owns the key",
        "the client_id is not the one the code was issued to (Services ID for web, "
        "App ID / bundle ID for native apps), or differs in case",
        "the client secret has expired, or its exp is more than 15,777,000 s ahead",
        "the clock of this machine is wrong (iat in the future)",
        "the redirect_uri is not registered for this Services ID",
    )

    def _message(self) -> str:
        causes = "; ".join(f"({i}) {c}" for i, c in enumerate(self.likely_causes, start=1))
        return (
            f"{super()._message()}. Apple gives no reason for invalid_client; usual causes: "
            f"{causes}. Run `appleconnect doctor` to check them."
        )


class InvalidGrant(AppleError):
    """Raised for ``invalid_grant``: the code or refresh token is expired, used, revoked, or was
    issued to another client id."""

    code = "invalid_grant"


class UnauthorizedClient(AppleError):
    """Raised for ``unauthorized_client``: the client may not use this grant type."""

    code = "unauthorized_client"


class UnsupportedGrantType(AppleError):
    """Raised for ``unsupported_grant_type``: missing or misspelled ``grant_type``."""

    code = "unsupported_grant_type"


class InvalidScope(AppleError):
    """Raised for ``invalid_scope``: the requested scope is not one Apple knows."""

    code = "invalid_scope"


_BY_CODE: dict[str, type[AppleError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        InvalidClient,
        InvalidGrant,
        UnauthorizedClient,
        UnsupportedGrantType,
        InvalidScope,
    )
}


def apple_error_from_response(
    error: str, error_description: str | None, status_code: int
) -> AppleError:
    """Return the :class:`AppleError` subclass instance that matches Apple's ``error`` code."""
    cls = _BY_CODE.get(error, AppleError)
    return cls(error, error_description, status_code)


class AppleUnavailable(AppleConnectError):
    """Raised when Apple cannot be reached, times out, or answers with something that is not
    Apple's documented response (HTTP 5xx, malformed JSON). Distinct from a refusal: retrying
    later may succeed."""


class KeysUnavailable(AppleUnavailable):
    """Raised when a token names a key (``kid``) that the cached key set lacks and Apple's key
    set could not be fetched (an outage, a timeout, a garbled answer).

    Apple may have rotated its keys during the outage, so the token can be neither accepted nor
    refused: it is not reported as an invalid token. ``kid`` is the token's key id and
    ``retry_after`` the seconds until the key set may be fetched again; a service should answer
    503 with ``Retry-After`` (Apple retries a notification answered so).
    """

    def __init__(self, message: str, *, kid: str | None, retry_after: float) -> None:
        self.kid = kid
        self.retry_after = retry_after
        super().__init__(message)


class InvalidToken(AppleConnectError):
    """Raised when a JWT from Apple fails verification.

    ``reason`` is a short machine code naming the check that failed (for example ``signature``,
    ``aud``, ``exp``, ``nonce``, ``kid``, ``alg``, ``malformed``, ``size``); ``claim`` names the
    claim involved, if any. The message is one sentence for logs; do not show it to end users.
    """

    def __init__(self, reason: str, message: str, *, claim: str | None = None) -> None:
        self.reason = reason
        self.claim = claim
        super().__init__(message)


class InvalidIdentityToken(InvalidToken):
    """Raised when an identity token (``id_token``) fails verification."""


class InvalidNotification(InvalidToken):
    """Raised when a server-to-server notification fails verification or cannot be parsed."""


class InvalidAuthorizationResponse(AppleConnectError):
    """Raised when the parameters Apple delivered to the redirect URI are malformed: a missing
    code, an oversized field, or a ``user`` value that is not Apple's JSON. ``field`` names the
    offending parameter."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)
