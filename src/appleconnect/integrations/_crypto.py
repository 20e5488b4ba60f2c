"""``TokenCipher``: Apple's refresh tokens are encrypted before any store sees them.

A refresh token lets its holder ask Apple for new tokens of the user and is what a deletion
revokes; a copy of the database must not carry it in the clear. The integrations encrypt it with
Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under a key the application
provides (``encryption_key``, ``APPLE_ENCRYPTION_KEY``, ``APPLE_SIGN_IN["ENCRYPTION_KEY"]``).

Several keys may be given (a list, or one string with the keys separated by commas): the first
encrypts, every one decrypts, so that a key can be rotated without losing the tokens stored
under the old one.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEY_HELP = (
    "a Fernet key: 32 random bytes in URL-safe base64 (44 characters), made with "
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


class EncryptionKeyError(Exception):
    """A stored refresh token cannot be decrypted with the configured key(s): the key was
    changed without keeping the old one after it, or the stored value was altered."""


class TokenCipher:
    """Encrypts and decrypts refresh tokens with the application's Fernet key(s)."""

    def __init__(self, keys: str | Sequence[str]) -> None:
        listed = keys.split(",") if isinstance(keys, str) else list(keys)
        listed = [key.strip() for key in listed if key.strip()]
        if not listed:
            raise ValueError(f"No encryption key: give {KEY_HELP}.")
        fernets = []
        for position, key in enumerate(listed, 1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise ValueError(f"Encryption key {position} is not {KEY_HELP}.") from None
        self._fernet = MultiFernet(fernets)

    def encrypt(self, token: str) -> str:
        """The ciphertext of ``token`` (text, safe for a database column or JSON)."""
        return self._fernet.encrypt(token.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """The token; :class:`EncryptionKeyError` when no configured key opens it."""
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise EncryptionKeyError(
                "A stored Apple refresh token cannot be decrypted with the configured "
                "encryption key (APPLE_ENCRYPTION_KEY / APPLE_SIGN_IN['ENCRYPTION_KEY']): was "
                "the key replaced? List the new key first and the old one after it."
            ) from None
