"""What the test helpers hand back: credentials, a sign-in as Apple delivers it, an Apple ID, a
notification that was sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class EmulatorError(Exception):
    """Raised when the emulator refuses a helper call (an unknown Apple ID, a bad value...).

    ``status`` is the control API's HTTP status and ``detail`` its message; for refusals in
    Apple's own words (an unregistered redirect URI...) ``error`` holds Apple's error code.
    """

    def __init__(self, status: int, detail: str, error: str | None = None) -> None:
        super().__init__(f"{detail} (HTTP {status})")
        self.status = status
        self.detail = detail
        self.error = error


@dataclass(frozen=True)
class Credentials:
    """The emulator's default team: everything a client needs to talk to it."""

    team_id: str
    key_id: str
    private_key_pem: str = field(repr=False)
    services_id: str
    """The Services ID (web flow)."""
    app_id: str
    """The App ID (native apps; the ``aud`` of notifications)."""
    redirect_uri: str
    """A registered return URL of the Services ID."""
    issuer: str


@dataclass(frozen=True)
class SignIn:
    """What Apple delivers to the redirect URI after the user pressed Continue (or Cancel)."""

    code: str | None
    id_token: str | None = field(repr=False)
    state: str | None
    user: str | None
    """The ``user`` JSON string, sent only on the first authorization for the team."""
    error: str | None
    """``user_cancelled_authorize`` when the user pressed Cancel."""
    redirect_uri: str | None
    response_mode: str
    form: dict[str, str] = field(repr=False)
    """Exactly the fields Apple POSTs (form_post) or appends (query, fragment)."""

    @property
    def user_json(self) -> dict[str, Any] | None:
        """``user`` parsed (``{"name": {"firstName", "lastName"}, "email"}``), or ``None``."""
        import json

        return None if self.user is None else dict(json.loads(self.user))


@dataclass(frozen=True)
class Account:
    """A test Apple ID."""

    id: str
    email: str
    first_name: str
    last_name: str


@dataclass(frozen=True)
class SentNotification:
    """A server-to-server notification the emulator signed and (if a URL is set) delivered."""

    type: str
    sub: str
    team_id: str
    url: str | None
    status: str
    """``delivered``, ``failed``, ``no-url`` (no notification URL set) or ``pending``."""
    payload: str = field(repr=False)
    """The signed JWT, as Apple POSTs it in ``{"payload": ...}``."""

    @property
    def body(self) -> dict[str, str]:
        """The JSON body Apple POSTs: ``{"payload": "<JWT>"}``."""
        return {"payload": self.payload}
