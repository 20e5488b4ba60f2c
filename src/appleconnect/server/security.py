"""Opaque tokens, their hashes, and encryption of secrets at rest.

Session tokens, API keys and one-time links are 256-bit random values; only their SHA-256 is
stored, so a copy of the database does not let anyone sign in. Apple refresh tokens and a pasted
.p8 key are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under the operator's key;
several comma-separated keys allow rotation (the first encrypts, all decrypt).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .files import private_dir, private_file
from .settings import Settings, SettingsError

__all__ = [
    "Encryptor",
    "constant_time_equal",
    "hash_token",
    "load_encryptor",
    "new_token",
]

SESSION_PREFIX = "acs_"
API_KEY_PREFIX = "ack_"
LOGIN_PREFIX = "acl_"
HANDOFF_PREFIX = "ach_"


def new_token(prefix: str) -> str:
    """A new opaque token: a readable prefix and 256 random bits, URL-safe."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class Encryptor:
    """Encrypts and decrypts short secrets with the operator's key(s)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SettingsError("encryption_key: give at least one key.")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except ValueError:
            raise SettingsError(
                "encryption_key: each key must be 32 url-safe base64-encoded bytes "
                "(Fernet.generate_key())."
            ) from None

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """Raise ``ValueError`` when the ciphertext was not made with one of the keys."""
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise ValueError(
                "cannot decrypt a stored secret: the encryption_key is not the one it was "
                "encrypted with"
            ) from None


def load_encryptor(settings: Settings) -> Encryptor:
    """The encryptor for ``settings``; sandbox mode keeps a generated key in the data dir."""
    if settings.encryption_key:
        keys = [k.strip().encode("ascii") for k in settings.encryption_key.get().split(",")]
        return Encryptor([k for k in keys if k])
    if not settings.sandbox:
        raise SettingsError("encryption_key: production mode needs a key.")
    path = Path(settings.data_dir) / "encryption.key"
    private_dir(path.parent)
    if path.exists():
        private_file(path)  # narrows a key left readable by others
    else:
        # O_EXCL makes two processes starting together agree on one key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
    return Encryptor([path.read_bytes().strip()])
