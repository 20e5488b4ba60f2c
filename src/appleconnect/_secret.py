"""The client secret: an ES256 JWT signed with the team's Sign in with Apple key (.p8).

Apple's rules (docs/apple-protocol.md#client-secret): header ``alg=ES256`` and ``kid`` = Key ID;
claims ``iss`` = Team ID, ``iat``, ``exp`` at most 15,777,000 s after Apple's current time,
``aud`` = ``https://appleid.apple.com``, ``sub`` = the client id, exactly; the signature is raw
``R || S``, never DER. Most ``invalid_client`` answers come from breaking one of these, so the
inputs are checked when the object is built, not when Apple refuses the secret.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ._constants import APPLE_ISSUER, CLIENT_SECRET_MAX_TTL
from ._jws import sign_es256

__all__ = ["ClientSecret", "load_private_key", "validate_client_id", "validate_team_or_key_id"]

DEFAULT_TTL = 86_400
"""One day: long enough that a process mints a secret about once a day, short enough that a
leaked secret is not useful for six months."""

CLOCK_SKEW_BACKDATE = 5
"""Seconds subtracted from ``iat``, so that Apple, whose clock may run behind ours, never sees an
``iat`` in the future (docs/pitfalls.md#pitfall-invalid-client,
docs/pitfalls.md#pitfall-clock-skew)."""

_ID_PATTERN = re.compile(r"[A-Z0-9]{10}")
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END ([A-Z0-9 ]+)-----", re.DOTALL)


def validate_team_or_key_id(value: object, what: str) -> str:
    """Return ``value`` if it is a 10-character Apple identifier; raise ValueError otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"The {what} must be a string, not {type(value).__name__}.")
    stripped = value.strip()
    if not _ID_PATTERN.fullmatch(stripped):
        where = (
            "Membership details in the Apple Developer account"
            if what == "Team ID"
            else "Certificates, Identifiers & Profiles → Keys"
        )
        raise ValueError(
            f"The {what} must be the 10-character identifier (capital letters and digits) shown "
            f"under {where}; got {value!r} ({len(value)} characters)."
        )
    return stripped


def validate_client_id(client_id: object, team_id: str | None = None) -> str:
    """Return ``client_id`` if Apple could accept it; raise ValueError with the reason otherwise."""
    if not isinstance(client_id, str):
        raise TypeError(f"The client id must be a string, not {type(client_id).__name__}.")
    if not client_id or client_id != client_id.strip() or len(client_id) > 255:
        raise ValueError(
            f"The client id must be your App ID (bundle ID) or Services ID, exactly as registered, "
            f"without surrounding spaces; got {client_id!r}."
        )
    if any(c.isspace() or not c.isprintable() for c in client_id):
        raise ValueError(f"The client id {client_id!r} contains spaces or control characters.")
    if "," in client_id:
        raise ValueError(
            f"The client id {client_id!r} contains a comma: it is one identifier, such as "
            "'com.example.web'; give several client ids where a list is accepted, not here."
        )
    if team_id and team_id in client_id:
        raise ValueError(
            f"The client id {client_id!r} contains the Team ID {team_id!r}; Apple wants the "
            f"identifier without the Team ID prefix (for example 'com.example.web')."
        )
    return client_id


def _normalise_pem(text: str) -> str:
    # Tolerate the usual mangling of a .p8 that went through an environment variable or a
    # settings form: literal "\n", CRLF, surrounding quotes and spaces, a missing final newline,
    # or the whole file folded onto one line (appwrite PR #13320, omniauth-apple #14).
    text = text.strip().strip("'\"").strip()
    text = text.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\r\n", "\n")
    match = _PEM_BLOCK.search(text)
    if match is None:
        if "-----BEGIN" in text:
            raise ValueError(
                "The private key is not valid PEM: its '-----END ...-----' line is missing or "
                "damaged. Paste the whole AuthKey_<KEYID>.p8 file."
            )
        raise ValueError(
            "The private key is not PEM: it must start with '-----BEGIN PRIVATE KEY-----'. "
            "Paste the whole AuthKey_<KEYID>.p8 file, not only its middle part."
        )
    label, body, end_label = match.group(1), match.group(2), match.group(3)
    if label != end_label:
        raise ValueError(f"The private key's BEGIN {label} and END {end_label} lines differ.")
    if label in {"PUBLIC KEY", "CERTIFICATE", "EC PARAMETERS"}:
        raise ValueError(
            f"This is a {label.lower()}, not a private key. Apple's .p8 file contains "
            "'-----BEGIN PRIVATE KEY-----'."
        )
    if label == "ENCRYPTED PRIVATE KEY":
        raise ValueError(
            "The private key is encrypted with a passphrase; Apple's .p8 files are not. "
            "Use the file exactly as downloaded from the developer account."
        )
    if label == "RSA PRIVATE KEY":
        raise ValueError(
            "This is an RSA private key; Sign in with Apple keys are EC keys on the P-256 curve "
            "(the AuthKey_<KEYID>.p8 file from Certificates, Identifiers & Profiles → Keys)."
        )
    compact = "".join(body.split())
    lines = [compact[i : i + 64] for i in range(0, len(compact), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def load_private_key(private_key: str | bytes) -> ec.EllipticCurvePrivateKey:
    """Load a Sign in with Apple .p8 key, tolerating common mangling.

    Raises :class:`ValueError` with a sentence that says what is wrong: not PEM, damaged, an RSA
    key, a public key, or a key on the wrong curve.
    """
    if isinstance(private_key, bytes):
        try:
            private_key = private_key.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(
                "The private key is binary data, not the text of a .p8 file (PEM)."
            ) from None
    if not isinstance(private_key, str):
        raise TypeError(
            f"The private key must be the .p8 file's text (str or bytes), not "
            f"{type(private_key).__name__}."
        )
    if len(private_key) > 16_384:
        raise ValueError("The private key is far larger than a .p8 file; paste only that file.")
    pem = _normalise_pem(private_key)
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        if "password" in str(exc).lower() or "encrypted" in str(exc).lower():
            raise ValueError("The private key is encrypted; Apple's .p8 files are not.") from None
        raise ValueError(
            "The private key's PEM body is damaged (truncated, altered, or not base64); "
            "paste the AuthKey_<KEYID>.p8 file again."
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(
            "This is an RSA private key; Sign in with Apple keys are EC keys on the P-256 curve."
        )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(
            f"This is a {type(key).__name__} key; Sign in with Apple keys are EC P-256 keys."
        )
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(
            f"The key is on curve {key.curve.name}; Sign in with Apple needs P-256 "
            "(secp256r1, prime256v1)."
        )
    return key


class ClientSecret:
    """An automatically minted, cached client secret for one client id.

    >>> secret = ClientSecret("ABCDE12345", "KEYID12345", "com.example.web", pem)  # doctest: +SKIP
    >>> secret.token  # an ES256 JWT, re-minted shortly before it expires  # doctest: +SKIP

    ``ttl`` is the lifetime of each minted secret in seconds (at most 15,777,000, Apple's limit).
    ``clock`` returns Unix time in seconds; inject one in tests. Minting is thread-safe.
    """

    __slots__ = (
        "_cached",
        "_clock",
        "_key",
        "_lock",
        "_refresh_margin",
        "client_id",
        "key_id",
        "team_id",
        "ttl",
    )

    def __init__(
        self,
        team_id: str,
        key_id: str,
        client_id: str,
        private_key: str | bytes,
        *,
        ttl: int = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.team_id = validate_team_or_key_id(team_id, "Team ID")
        self.key_id = validate_team_or_key_id(key_id, "Key ID")
        self.client_id = validate_client_id(client_id, self.team_id)
        if isinstance(ttl, bool) or not isinstance(ttl, int):
            raise TypeError("ttl must be an integer number of seconds.")
        if not 60 <= ttl <= CLIENT_SECRET_MAX_TTL:
            raise ValueError(
                f"ttl must be between 60 and {CLIENT_SECRET_MAX_TTL} seconds (Apple refuses a "
                f"client secret that expires more than about six months ahead); got {ttl}."
            )
        self.ttl = ttl
        self._key = load_private_key(private_key)
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[str, int] | None = None
        # Re-mint when less than a tenth of the lifetime (at most ten minutes) remains, so that a
        # secret never expires while a request carrying it is in flight.
        self._refresh_margin = min(600, ttl // 10)

    @classmethod
    def from_file(
        cls,
        team_id: str,
        key_id: str,
        client_id: str,
        path: str,
        *,
        ttl: int = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> ClientSecret:
        """Build a ClientSecret from the path of an ``AuthKey_<KEYID>.p8`` file."""
        with open(path, "rb") as handle:
            return cls(team_id, key_id, client_id, handle.read(), ttl=ttl, clock=clock)

    def with_client_id(self, client_id: str) -> ClientSecret:
        """Return a ClientSecret with the same key and team for another client id (the App ID
        beside the Services ID, for example)."""
        other = object.__new__(ClientSecret)
        other.team_id, other.key_id, other.ttl = self.team_id, self.key_id, self.ttl
        other.client_id = validate_client_id(client_id, self.team_id)
        other._key, other._clock = self._key, self._clock
        other._lock, other._cached = threading.Lock(), None
        other._refresh_margin = self._refresh_margin
        return other

    @property
    def token(self) -> str:
        """The current client secret, minted anew when the cached one is about to expire."""
        cached = self._cached
        now = self._clock()
        if cached is not None and now < cached[1] - self._refresh_margin:
            return cached[0]
        with self._lock:
            cached = self._cached
            if cached is not None and now < cached[1] - self._refresh_margin:
                return cached[0]
            token, exp = self._mint(now)
            self._cached = (token, exp)
            return token

    @property
    def expires_at(self) -> int:
        """Unix time at which the current secret expires (mints one if there is none yet)."""
        self.token  # noqa: B018 - ensures a current secret exists
        assert self._cached is not None
        return self._cached[1]

    def claims(self, now: float | None = None) -> dict[str, Any]:
        """The claims a secret minted at ``now`` carries (for ``appleconnect doctor``)."""
        now = self._clock() if now is None else now
        return {
            "iss": self.team_id,
            "iat": int(now) - CLOCK_SKEW_BACKDATE,
            "exp": int(now) + self.ttl,
            "aud": APPLE_ISSUER,
            "sub": self.client_id,
        }

    def _mint(self, now: float) -> tuple[str, int]:
        claims = self.claims(now)
        token = sign_es256({"alg": "ES256", "kid": self.key_id}, claims, self._key)
        return token, claims["exp"]

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half of the key (what Apple holds for this Key ID)."""
        return self._key.public_key()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the public key (SubjectPublicKeyInfo DER), hex: safe to show and log."""
        der = self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def __str__(self) -> str:
        return self.token

    def __repr__(self) -> str:
        return (
            f"ClientSecret(team_id={self.team_id!r}, key_id={self.key_id!r}, "
            f"client_id={self.client_id!r}, key=<P-256 {self.fingerprint[:16]}…>)"
        )
