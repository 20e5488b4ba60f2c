"""Everything the emulator signs and checks, done with joserfc and ``cryptography``.

The emulator never uses the project's own JOSE code (docs/architecture.md#import-boundaries):
it is an independent implementation of Apple's side, so that a bug in the library is caught here
instead of cancelling out.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import string
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from ._json import JSONTooDeep, parse_json

_KID_ALPHABET = string.ascii_letters + string.digits
_ID_ALPHABET = string.ascii_uppercase + string.digits


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515, section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; raises ``ValueError`` on bad input."""
    if not text or any(c not in _B64URL for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset(string.ascii_letters + string.digits + "-_")


def half_hash(value: str) -> str:
    """``at_hash``/``c_hash``: left half of SHA-256 of the value, base64url (OIDC 3.1.3.6)."""
    return b64url(hashlib.sha256(value.encode("ascii")).digest()[:16])


def random_id(length: int = 10) -> str:
    """An Apple-style identifier (Team ID, Key ID): upper-case letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def random_kid() -> str:
    """A key id for a JWKS key, like Apple's 10-character ones (``Bh6H7rHVmb``)."""
    return "".join(secrets.choice(_KID_ALPHABET) for _ in range(10))


def new_rsa_pem() -> str:
    """A fresh RSA-2048 private key (PKCS#8 PEM) for signing id_tokens and notifications."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def new_ec_pem() -> tuple[str, str]:
    """A fresh P-256 key pair like Apple's ``AuthKey_<KEYID>.p8``: (private PEM, public PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private, public


def public_pem_of(private_pem: str) -> str:
    """The SubjectPublicKeyInfo PEM of an EC or RSA private key PEM."""
    key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


class Signer:
    """Signs JWTs with one RSA key, the way Apple signs id_tokens and notifications (RS256).

    The compact JWS is assembled here (RFC 7515, section 7.1) and signed with ``cryptography``
    (RSASSA-PKCS1-v1_5 with SHA-256, RFC 7518, section 3.3): one RSA signature is the whole cost
    of a token. The header is encoded once per key.
    """

    def __init__(self, kid: str, private_pem: str) -> None:
        self.kid = kid
        self._key = RSAKey.import_key(private_pem)
        private = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise TypeError("a signing key must be an RSA private key")
        self._private = private
        header = json.dumps({"kid": kid, "alg": "RS256"}, separators=(",", ":"))
        self._header = b64url(header.encode("ascii"))

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS whose header is exactly Apple's ``{"kid": ..., "alg": "RS256"}``."""
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        signing_input = f"{self._header}.{payload}"
        signature = self._private.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{b64url(signature)}"

    def jwk(self) -> dict[str, str]:
        """The public JWK as Apple publishes it in ``/auth/keys``."""
        public = self._key.as_dict(private=False)
        return {
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
            "n": str(public["n"]),
            "e": str(public["e"]),
        }


class SecretCheckError(Exception):
    """Raised when a client secret fails one check; the message says which, for diagnostics."""


MAX_SECRET_LENGTH = 4096
"""A client secret is a few hundred bytes; anything above this is refused before parsing."""


def read_secret_header(secret: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, checked for shape only (no signature yet).

    A well-formed header is remembered per secret (a bounded cache), like its signature.
    """
    if len(secret) > MAX_SECRET_LENGTH:
        raise SecretCheckError("The client secret is too long.")
    return dict(_header_of(secret))


@functools.lru_cache(maxsize=1024)
def _header_of(secret: str) -> tuple[tuple[str, Any], ...]:
    if len(secret) > MAX_SECRET_LENGTH:
        raise SecretCheckError("The client secret is too long.")
    parts = secret.split(".")
    if len(parts) != 3:
        raise SecretCheckError("The client secret is not a compact JWS (header.payload.signature).")
    try:
        header = parse_json(
            b64url_decode(parts[0]), max_bytes=MAX_SECRET_LENGTH, what="The client secret header"
        )
    except JSONTooDeep as exc:
        raise SecretCheckError(str(exc)) from exc
    except ValueError as exc:
        raise SecretCheckError("The client secret header is not base64url JSON.") from exc
    if not isinstance(header, dict):
        raise SecretCheckError("The client secret header is not a JSON object.")
    return tuple(header.items())


@functools.lru_cache(maxsize=256)
def ec_public_key(public_pem: str) -> ECKey:
    """The EC public key of a PEM, parsed once (parsing costs as much as a verification)."""
    return ECKey.import_key(public_pem)


def verify_es256(secret: str, public_pem: str) -> dict[str, Any]:
    """Verify an ES256 compact JWS with joserfc and return its claims.

    joserfc accepts only the raw ``R || S`` signature that RFC 7518, section 3.4 requires, so a
    DER-encoded signature (TN3107's classic cause of ``invalid_client``) fails here.

    A client reuses one secret for up to six months, so a secret that verified is remembered
    with the public key it verified under (a bounded cache): the signature is checked once, the
    claims (expiry, issuer, subject...) by the caller on every use. A refused secret is never
    remembered.
    """
    return dict(_verified_claims(secret, public_pem))


@functools.lru_cache(maxsize=1024)
def _verified_claims(secret: str, public_pem: str) -> tuple[tuple[str, Any], ...]:
    signature = secret.rsplit(".", 1)[-1]
    try:
        raw = b64url_decode(signature)
    except ValueError as exc:
        raise SecretCheckError("The client secret signature is not base64url.") from exc
    if len(raw) != 64:
        raise SecretCheckError(
            f"The client secret signature is {len(raw)} bytes, not the 64-byte raw R||S that "
            "ES256 requires (a DER-encoded signature is rejected)."
        )
    try:
        obj = jws.deserialize_compact(secret, ec_public_key(public_pem), algorithms=["ES256"])
    except JoseError as exc:
        raise SecretCheckError("The client secret signature does not verify.") from exc
    try:
        claims = parse_json(
            obj.payload or b"", max_bytes=MAX_SECRET_LENGTH, what="The client secret payload"
        )
    except JSONTooDeep as exc:
        raise SecretCheckError(str(exc)) from exc
    except ValueError as exc:
        raise SecretCheckError("The client secret payload is not JSON.") from exc
    if not isinstance(claims, dict):
        raise SecretCheckError("The client secret payload is not a JSON object.")
    return tuple(claims.items())
