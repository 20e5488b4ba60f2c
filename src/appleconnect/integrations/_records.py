"""The records the integrations keep: an Apple account, a sign-in in progress, a finished one."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AppleAccount:
    """What your app knows about a person who signed in with Apple, keyed by Apple's ``sub``.

    ``email`` and ``is_private_email`` come from the verified identity token of the latest
    sign-in; ``first_name``/``last_name`` from the first one (Apple sends the name once, and
    never signs it). ``email_forwarding`` is ``False`` while the user has turned off forwarding
    to a relay address (``email-disabled``): mail sent there bounces.
    """

    sub: str
    email: str | None = None
    is_private_email: bool = False
    first_name: str | None = None
    last_name: str | None = None
    email_forwarding: bool = True
    encrypted_refresh_token: str | None = field(default=None, repr=False)
    """Apple's refresh token, encrypted with the app's key (what
    :meth:`AppleSignIn.delete_account` revokes at Apple); :meth:`AppleSignIn.refresh_token_of`
    decrypts it."""

    @property
    def full_name(self) -> str | None:
        """First and last name joined, or ``None``."""
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) if parts else None


@dataclass(frozen=True)
class PendingSignIn:
    """A sign-in started by ``/start``: kept server-side under its ``state`` until the callback."""

    nonce: str = field(repr=False)
    browser_hash: str = field(repr=False)
    """SHA-256 of the random value in the starting browser's cookie."""
    next_path: str
    expires_at: float


@dataclass(frozen=True)
class CompletedSignIn:
    """A verified callback, waiting for the browser that started it to come back (``/finish``)."""

    browser_hash: str = field(repr=False)
    sub: str
    email: str | None
    is_private_email: bool
    first_name: str | None
    last_name: str | None
    encrypted_refresh_token: str | None = field(repr=False)
    next_path: str
    expires_at: float
