"""Parsing what Apple delivers to the redirect URI (query, fragment or form_post).

Apple sends ``code``, ``id_token``, ``state`` and, on the user's first authorization only, a
``user`` JSON string with the name and email the user chose
(docs/apple-protocol.md#authorization-response). On failure it sends ``error`` and ``state``
(docs/apple-protocol.md#quirk-redirect-errors). Everything here arrives through the
user's browser, so every field is untrusted input: it is size-capped, shape-checked and, for the
name, sanitised. Nothing here is verified cryptographically; the ``id_token`` must still go
through :func:`appleconnect.verify_identity_token` (or ``AppleClient.verify_identity_token``).
"""

from __future__ import annotations

import hmac
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs

from ._errors import InvalidAuthorizationResponse

__all__ = [
    "CANCELLATION_ERRORS",
    "AppleUser",
    "AuthorizationResponse",
    "parse_authorization_response",
]

CANCELLATION_ERRORS = frozenset(
    {"user_cancelled_authorize", "popup_closed_by_user", "user_trigger_new_signin_flow"}
)
"""``error`` values meaning that the user did not finish the flow, rather than a fault.

``user_cancelled_authorize`` is the only one Apple documents for the redirect; the other two come
from the Sign in with Apple JS popup (docs/apple-protocol.md#quirk-redirect-errors).
"""

# Caps on each field. Apple's values are far smaller (a code is about 70 characters, an
# id_token about 1 KiB); the caps exist so that a hostile request cannot make us hold, log or
# store megabytes.
MAX_CODE_LENGTH = 1024
MAX_ID_TOKEN_LENGTH = 16 * 1024
MAX_STATE_LENGTH = 1024
MAX_ERROR_LENGTH = 128
MAX_USER_JSON_BYTES = 4 * 1024
MAX_NAME_LENGTH = 100
MAX_EMAIL_LENGTH = 320
MAX_QUERY_STRING_LENGTH = 64 * 1024

_CODE_RE = re.compile(r"[\x21-\x7e]+")
_ERROR_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_JWT_RE = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")

# Characters that are never legitimate in a name: bidirectional overrides and isolates (used to
# make text display differently from what it is), and line/paragraph separators.
_FORBIDDEN_IN_NAMES = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029\ufeff"
)


@dataclass(frozen=True, slots=True)
class AppleUser:
    """The ``user`` JSON that Apple sends on the first authorization only.

    ``first_name`` and ``last_name`` are what the user typed on Apple's consent sheet: Apple does
    not check them, so they are user input (stripped, NFC-normalised, capped at 100 characters,
    without control characters). Persist them at the callback, before anything that can fail:
    later authorizations do not carry them.

    ``email`` is **unsigned**: anybody can POST a ``user`` field to your callback. Never use it
    to identify or link an account; take the email from the verified id_token
    (``IdentityToken.email``) instead.
    """

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = field(default=None, repr=False)

    @property
    def full_name(self) -> str | None:
        """The first and last names joined by a space, or ``None`` when both are absent."""
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) if parts else None


@dataclass(frozen=True, slots=True)
class AuthorizationResponse:
    """The validated parameters of Apple's redirect or form_post.

    On success ``code`` is set (and ``id_token`` when ``response_type=code id_token``). When
    Apple reports an error (``user_cancelled_authorize``, ``popup_closed_by_user``,
    ``user_trigger_new_signin_flow`` or anything else) ``error`` is set and ``code``,
    ``id_token`` and ``user`` are ``None``; :attr:`cancelled` tells a user's cancellation from
    other errors. ``state`` is echoed in both cases: check it with :meth:`check_state` or look
    it up in your server-side store.
    """

    code: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    state: str | None
    error: str | None
    user: AppleUser | None

    @property
    def cancelled(self) -> bool:
        """True when the user abandoned the flow (a cancellation, not a fault to report)."""
        return self.error in CANCELLATION_ERRORS

    def check_state(self, expected: str) -> None:
        """Raise :class:`InvalidAuthorizationResponse` unless ``state`` equals ``expected``.

        The comparison takes constant time. Call it (or look the state up server-side) before
        using the code: the state is what ties this callback to the browser that started it.
        """
        if not expected:
            raise ValueError("check_state() needs the state you sent to Apple; it was empty.")
        if self.state is None or not hmac.compare_digest(
            self.state.encode("utf-8"), expected.encode("utf-8")
        ):
            raise InvalidAuthorizationResponse(
                "state",
                "The state in Apple's response does not match the one sent with this sign-in "
                "(a forged callback, or a callback from another browser session).",
            )


@runtime_checkable
class _MultiDict(Protocol):
    def getlist(self, key: str) -> list[Any]: ...


_FIELDS = ("code", "id_token", "state", "error", "user")


def parse_authorization_response(
    form_or_query: Mapping[str, str] | Mapping[str, Sequence[str]] | str,
) -> AuthorizationResponse:
    """Validate what Apple delivered to the redirect URI and return it as a typed object.

    ``form_or_query`` is the form_post body or the query parameters, as a mapping (a plain
    ``dict``, the ``dict[str, list[str]]`` of :func:`urllib.parse.parse_qs`, or a framework's
    multi-dict such as Starlette's ``FormData`` or Django's ``QueryDict``), or the raw
    ``application/x-www-form-urlencoded`` string (a leading ``?`` or ``#`` is ignored).

    A parameter given more than once is refused: Apple never repeats one, and picking the first
    or the last would let an attacker choose. Unknown parameters are ignored.

    An ``error`` response is returned (with ``.error`` set and ``.code`` ``None``), not raised.
    Raises :class:`InvalidAuthorizationResponse` (with ``.field`` naming the parameter) when the
    response is malformed: no ``code`` and no ``error``, both at once, an oversized field, a
    control character, or a ``user`` value that is not Apple's JSON.
    """
    values = _single_values(form_or_query)

    error = values.get("error")
    code = values.get("code")
    state = values.get("state")
    if state is not None:
        state = _check_text("state", state, MAX_STATE_LENGTH)

    if error:
        error = _check_text("error", error, MAX_ERROR_LENGTH)
        if not _ERROR_RE.fullmatch(error):
            raise InvalidAuthorizationResponse(
                "error", "The error code in Apple's response contains unexpected characters."
            )
        if code:
            raise InvalidAuthorizationResponse(
                "code",
                "Apple's response carries both an error and a code; Apple never sends both, so "
                "the response is refused as ambiguous.",
            )
        return AuthorizationResponse(code=None, id_token=None, state=state, error=error, user=None)

    if not code:
        raise InvalidAuthorizationResponse(
            "code",
            "Apple's response has neither a code nor an error: the callback was not called by "
            "Apple, or the response_mode does not match how the callback reads parameters "
            "(form_post sends a POST body, query a query string, fragment never reaches a server).",
        )
    code = _check_text("code", code, MAX_CODE_LENGTH)
    if not _CODE_RE.fullmatch(code):
        raise InvalidAuthorizationResponse(
            "code", "The authorization code contains characters Apple never uses."
        )

    id_token = values.get("id_token") or None
    if id_token is not None:
        id_token = _check_text("id_token", id_token, MAX_ID_TOKEN_LENGTH)
        if not _JWT_RE.fullmatch(id_token):
            raise InvalidAuthorizationResponse(
                "id_token", "The id_token is not a compact JWT (three base64url parts)."
            )

    user_json = values.get("user") or None
    user = _parse_user(user_json) if user_json is not None else None
    return AuthorizationResponse(code=code, id_token=id_token, state=state, error=None, user=user)


def _single_values(source: object) -> dict[str, str]:
    """Reduce any supported input to one string per known field, refusing repeats."""
    if isinstance(source, bytes | bytearray):
        raise TypeError(
            "parse_authorization_response() takes a str or a mapping; decode the body first."
        )
    if isinstance(source, str):
        if len(source) > MAX_QUERY_STRING_LENGTH:
            raise InvalidAuthorizationResponse(
                "query", f"The response is longer than {MAX_QUERY_STRING_LENGTH} characters."
            )
        text = source[1:] if source[:1] in ("?", "#") else source
        try:
            parsed = parse_qs(text, keep_blank_values=True, errors="strict", max_num_fields=64)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidAuthorizationResponse(
                "query", "The response is not a valid form-encoded string."
            ) from exc
        source = parsed
    if not isinstance(source, Mapping):
        raise TypeError(
            "parse_authorization_response() takes a mapping of parameters (the form body or the "
            f"query) or a query string, not {type(source).__name__}."
        )

    values: dict[str, str] = {}
    for name in _FIELDS:
        if name not in source:
            continue
        raw: object = source.getlist(name) if isinstance(source, _MultiDict) else source[name]
        values_for_name = _as_list(name, raw)
        if len(values_for_name) > 1:
            raise InvalidAuthorizationResponse(
                name,
                f"The parameter {name!r} appears {len(values_for_name)} times; Apple sends each "
                "parameter once, so the response is refused.",
            )
        if values_for_name:
            values[name] = values_for_name[0]
    return values


def _as_list(name: str, raw: object) -> list[str]:
    items: Iterable[object]
    if isinstance(raw, str):
        items = [raw]
    elif isinstance(raw, list | tuple):
        items = raw
    else:
        raise InvalidAuthorizationResponse(
            name, f"The parameter {name!r} is a {type(raw).__name__}, not a string."
        )
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            # Starlette's FormData holds an UploadFile for a multipart file field.
            raise InvalidAuthorizationResponse(
                name, f"The parameter {name!r} is a {type(item).__name__}, not a string."
            )
        result.append(item)
    return result


def _check_text(name: str, value: str, cap: int) -> str:
    if len(value) > cap:
        raise InvalidAuthorizationResponse(
            name, f"The parameter {name!r} is longer than {cap} characters."
        )
    if _has_control_character(value):
        raise InvalidAuthorizationResponse(
            name, f"The parameter {name!r} contains a control character."
        )
    _check_unicode(name, value)
    return value


def _check_unicode(name: str, value: str) -> None:
    """Refuse lone surrogates: a ``str`` can hold them (decoded with ``surrogateescape`` or
    ``surrogatepass``), but they are not text and would fail later, when encoded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidAuthorizationResponse(
            name, f"The parameter {name!r} is not valid Unicode text (a lone surrogate)."
        ) from None


def _has_control_character(value: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in value)


def _parse_user(user_json: str) -> AppleUser:
    _check_unicode("user", user_json)
    if len(user_json.encode("utf-8")) > MAX_USER_JSON_BYTES:
        raise InvalidAuthorizationResponse(
            "user", f"The user JSON is larger than {MAX_USER_JSON_BYTES} bytes."
        )
    try:
        data = json.loads(
            user_json,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
        )
    except (ValueError, RecursionError) as exc:
        raise InvalidAuthorizationResponse(
            "user",
            "The user parameter is not valid JSON; Apple sends "
            '{"name":{"firstName":…,"lastName":…},"email":…}.',
        ) from exc
    if not isinstance(data, dict):
        raise InvalidAuthorizationResponse("user", "The user JSON is not an object.")

    first_name = last_name = None
    name = data.get("name")
    if name is not None:
        if not isinstance(name, dict):
            raise InvalidAuthorizationResponse("user", 'The user JSON\'s "name" is not an object.')
        first_name = _clean_name("firstName", name.get("firstName"))
        last_name = _clean_name("lastName", name.get("lastName"))

    email = data.get("email")
    if email is not None:
        if not isinstance(email, str):
            raise InvalidAuthorizationResponse("user", 'The user JSON\'s "email" is not a string.')
        email = email.strip()
        if len(email) > MAX_EMAIL_LENGTH or not _EMAIL_RE.fullmatch(email):
            raise InvalidAuthorizationResponse(
                "user", 'The user JSON\'s "email" is not an email address.'
            )
        email = email or None
    return AppleUser(first_name=first_name, last_name=last_name, email=email)


def _clean_name(key: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidAuthorizationResponse("user", f"The user JSON's {key!r} is not a string.")
    cleaned = unicodedata.normalize("NFC", value).strip()
    if any(unicodedata.category(ch) == "Cc" or ch in _FORBIDDEN_IN_NAMES for ch in cleaned):
        raise InvalidAuthorizationResponse(
            "user",
            f"The user JSON's {key!r} contains a control or bidirectional-override character.",
        )
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidAuthorizationResponse(
            "user", f"The user JSON's {key!r} is longer than {MAX_NAME_LENGTH} characters."
        )
    return cleaned or None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
