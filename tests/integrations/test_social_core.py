"""social-auth-core's Apple backend (``AppleIdAuth``), unmodified, against the ``apple_emulator``
fixture with the settings docs/testing.md gives: what it covers of the comparison table in
docs/integrations.md. Its pipeline (users, storage) is left out: the strategy below stops at
``authenticate`` and returns what the backend hands to it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from appleconnect.testing import AppleEmulator

with warnings.catch_warnings():
    # python3-openid, which social-core imports, uses a deprecated defusedxml module.
    warnings.simplefilter("ignore", DeprecationWarning)
    import social_core
    from social_core.backends.apple import AppleIdAuth
    from social_core.strategy import BaseStrategy

CALLBACK = "https://testserver/complete/apple-id/"


def nonce_storage() -> type:
    """A storage with only what the OAuth2 backends use: one-use values (social-core's state)."""
    used: set[tuple[str, int, str]] = set()

    class Nonces:
        @classmethod
        def use(cls, server_url: str, timestamp: int, salt: str) -> bool:
            if (server_url, timestamp, salt) in used:
                return False
            used.add((server_url, timestamp, salt))
            return True

        @classmethod
        def consume(cls, server_url: str, timestamp: int, salt: str) -> bool:
            if (server_url, timestamp, salt) not in used:
                return False
            used.remove((server_url, timestamp, salt))
            return True

    return type("Storage", (), {"nonce": Nonces})


class DictStrategy(BaseStrategy):
    """The least a social-core strategy needs: settings, a session and the request's data."""

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(storage=nonce_storage())
        self.settings = settings
        self.session: dict[str, Any] = {}
        self.data: dict[str, str] = {}

    def get_setting(self, name: str) -> Any:
        return self.settings[name]

    def request_data(self, merge: bool = True) -> dict[str, str]:
        return self.data

    def request_host(self) -> str:
        return "testserver"

    def session_get(self, name: str, default: Any = None) -> Any:
        return self.session.get(name, default)

    def session_set(self, name: str, value: Any) -> None:
        self.session[name] = value

    def session_pop(self, name: str) -> Any:
        return self.session.pop(name, None)

    def build_absolute_uri(self, path: str | None = None) -> str:
        return f"https://testserver{path or ''}"

    def authenticate(self, backend: Any, *args: Any, **kwargs: Any) -> Any:
        return {"backend": backend, **kwargs}  # where the pipeline would start


@pytest.fixture
def strategy(apple_emulator: AppleEmulator, monkeypatch: pytest.MonkeyPatch) -> DictStrategy:
    base, c = apple_emulator.base_url, apple_emulator.credentials
    monkeypatch.setattr(AppleIdAuth, "AUTHORIZATION_URL", f"{base}/auth/authorize")
    monkeypatch.setattr(AppleIdAuth, "ACCESS_TOKEN_URL", f"{base}/auth/token")
    monkeypatch.setattr(AppleIdAuth, "JWK_URL", f"{base}/auth/keys")
    apple_emulator.register_redirect_uri(CALLBACK)
    return DictStrategy(
        {
            "SOCIAL_AUTH_APPLE_ID_CLIENT": c.services_id,
            "SOCIAL_AUTH_APPLE_ID_TEAM": c.team_id,
            "SOCIAL_AUTH_APPLE_ID_KEY": c.key_id,
            "SOCIAL_AUTH_APPLE_ID_SECRET": c.private_key_pem,
            "SOCIAL_AUTH_APPLE_ID_SCOPE": ["name", "email"],
            "SOCIAL_AUTH_APPLE_ID_AUDIENCE": [c.services_id, c.app_id],
        }
    )


def complete(
    emulator: AppleEmulator, strategy: DictStrategy, account: str, **consent: Any
) -> tuple[str, dict[str, Any]]:
    """Start with social-core, consent at the emulator, complete; the authorization URL and
    what the backend hands to ``authenticate``."""
    url = AppleIdAuth(strategy, redirect_uri="/complete/apple-id/").auth_url()
    strategy.data = emulator.authorize(url, account, **consent).form
    result: dict[str, Any] = AppleIdAuth(
        strategy, redirect_uri="/complete/apple-id/"
    ).auth_complete()
    return url, result


def test_the_documented_settings_complete_a_sign_in(
    apple_emulator: AppleEmulator, strategy: DictStrategy
) -> None:
    _, result = complete(apple_emulator, strategy, "maria.ruiz@example.com", name="Ana Ruiz")
    response = result["response"]
    assert response["sub"] == apple_emulator.sub_for("maria.ruiz@example.com")
    assert response["email"] == "maria.ruiz@example.com"
    details = result["backend"].get_user_details(response)
    assert (details["first_name"], details["last_name"]) == ("Ana", "Ruiz")


def test_no_nonce_is_sent(apple_emulator: AppleEmulator, strategy: DictStrategy) -> None:
    url, result = complete(apple_emulator, strategy, "maria.ruiz@example.com")
    assert "nonce" not in parse_qs(urlsplit(url).query)
    assert "nonce" not in result["response"]


def test_the_relay_flag_is_only_the_raw_claim(
    apple_emulator: AppleEmulator, strategy: DictStrategy
) -> None:
    _, result = complete(apple_emulator, strategy, "li.wei@example.com", share_email=False)
    response = result["response"]
    assert response["is_private_email"] == "true"  # Apple's string, not a boolean
    assert "is_private_email" not in result["backend"].get_user_details(response)


def test_the_name_reaches_only_the_first_sign_in(
    apple_emulator: AppleEmulator, strategy: DictStrategy
) -> None:
    complete(apple_emulator, strategy, "sam.okafor@example.com", name="Sam Okafor")
    _, again = complete(apple_emulator, strategy, "sam.okafor@example.com")
    details = again["backend"].get_user_details(again["response"])
    # Keeping the first name is left to the project's pipeline and storage.
    assert (details["first_name"], details["last_name"]) == (None, None)


def test_no_refresh_token_is_kept_and_none_is_revoked(
    apple_emulator: AppleEmulator, strategy: DictStrategy
) -> None:
    _, result = complete(apple_emulator, strategy, "maria.ruiz@example.com")
    backend, response = result["backend"], result["response"]
    # The token response is replaced by the id_token's claims: Apple's refresh token is gone.
    assert "refresh_token" not in response
    assert set(response) >= {"sub", "email", "access_token"}
    assert not backend.revoke_token_url("any-token", response["sub"])  # no revocation endpoint
    assert backend.revoke_token("any-token", response["sub"]) is None


def test_extra_data_keeps_the_access_token_as_it_came(
    apple_emulator: AppleEmulator, strategy: DictStrategy
) -> None:
    _, result = complete(apple_emulator, strategy, "maria.ruiz@example.com")
    backend, response = result["backend"], result["response"]
    extra = backend.extra_data(None, response["sub"], response, {}, {})
    # What the project's storage puts in UserSocialAuth.extra_data (JSON, not encrypted): the
    # access token itself; Apple's refresh token is not there to keep.
    assert extra["access_token"] == response["access_token"]
    assert "refresh_token" not in extra


def test_no_notification_or_transfer_handling_in_the_package() -> None:
    package = Path(social_core.__file__).parent
    texts = [path.read_text(errors="replace") for path in package.rglob("*.py")]
    for needle in ("consent-revoked", "email-disabled", "account-delete", "transfer_sub"):
        assert not any(needle in text for text in texts), needle
    assert json.dumps(sorted(AppleIdAuth.__dict__)).count("notification") == 0
