"""Apple's refresh tokens reach the integrations' stores only encrypted with the app's key
(``AppleSignIn`` with ``MemoryStore`` here; the Django table in test_django.py)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from integration_helpers import CALLBACK

from appleconnect import InvalidGrant
from appleconnect.integrations import (
    AppleAccount,
    AppleSignIn,
    EncryptionKeyError,
    MemoryStore,
    from_environ,
)
from appleconnect.testing import AppleEmulator

MARIA = "maria.ruiz@example.com"


def signed_in(sign_in: AppleSignIn, emulator: AppleEmulator) -> AppleAccount:
    """The whole flow through the core; the stored account."""
    started = sign_in.start("/")
    token = sign_in.callback(emulator.authorize(started.url, MARIA).form)
    return sign_in.finish(token, started.browser_value).account


def test_the_store_holds_only_the_encrypted_refresh_token(
    apple_sign_in: AppleSignIn, apple_emulator: AppleEmulator
) -> None:
    started = apple_sign_in.start("/")
    token = apple_sign_in.callback(apple_emulator.authorize(started.url, MARIA).form)
    waiting = apple_sign_in.store.take_completed(token)  # what waits for the browser
    assert waiting is not None
    apple_sign_in.store.put_completed(token, waiting)
    account = apple_sign_in.finish(token, started.browser_value).account
    stored = apple_sign_in.store.get_account(account.sub)
    assert stored is not None
    assert stored.encrypted_refresh_token is not None
    refresh = apple_sign_in.refresh_token_of(stored)
    assert refresh is not None
    assert refresh.startswith("r")
    assert refresh not in stored.encrypted_refresh_token
    assert waiting.encrypted_refresh_token is not None
    assert refresh not in waiting.encrypted_refresh_token
    assert refresh not in repr(stored)
    assert apple_emulator.client().refresh(refresh).access_token  # the decrypted token is Apple's


def test_deletion_decrypts_and_revokes_at_apple(
    apple_sign_in: AppleSignIn, apple_emulator: AppleEmulator
) -> None:
    account = signed_in(apple_sign_in, apple_emulator)
    refresh = apple_sign_in.refresh_token_of(account)
    apple_sign_in.delete_account(account.sub)
    assert apple_sign_in.store.get_account(account.sub) is None
    with pytest.raises(InvalidGrant, match="revoked"):
        apple_emulator.client().refresh(refresh or "")


def test_a_wrong_key_is_a_clear_error_and_keeps_the_account(
    apple_sign_in: AppleSignIn, apple_emulator: AppleEmulator
) -> None:
    account = signed_in(apple_sign_in, apple_emulator)
    other = AppleSignIn(
        apple_sign_in.client,
        redirect_uri=CALLBACK,
        store=apple_sign_in.store,
        encryption_key=Fernet.generate_key().decode(),
    )
    with pytest.raises(EncryptionKeyError, match="cannot be decrypted with the configured"):
        other.delete_account(account.sub)
    assert apple_sign_in.store.get_account(account.sub) is not None  # nothing deleted
    refresh = apple_sign_in.refresh_token_of(account)
    assert apple_emulator.client().refresh(refresh or "").access_token  # nor revoked


def test_a_new_key_listed_before_the_old_one_still_opens_old_tokens(
    apple_sign_in: AppleSignIn, apple_emulator: AppleEmulator
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = AppleSignIn(
        apple_sign_in.client, redirect_uri=CALLBACK, store=MemoryStore(), encryption_key=old_key
    )
    account = signed_in(before, apple_emulator)
    after = AppleSignIn(
        before.client,
        redirect_uri=CALLBACK,
        store=before.store,
        encryption_key=f"{new_key},{old_key}",
    )
    assert after.refresh_token_of(account) == before.refresh_token_of(account)
    fresh = after.cipher.encrypt("r-new")  # new tokens are encrypted with the first key
    with pytest.raises(EncryptionKeyError):
        before.cipher.decrypt(fresh)


def test_no_key_or_a_malformed_key_refuses_to_start(apple_emulator: AppleEmulator) -> None:
    c = apple_emulator.credentials
    environ = {
        "APPLE_TEAM_ID": c.team_id,
        "APPLE_KEY_ID": c.key_id,
        "APPLE_PRIVATE_KEY": c.private_key_pem,
        "APPLE_SERVICES_ID": c.services_id,
        "APPLE_REDIRECT_URI": CALLBACK,
    }
    with pytest.raises(ValueError, match="Set the environment variable APPLE_ENCRYPTION_KEY"):
        from_environ(environ, store=MemoryStore())
    with pytest.raises(ValueError, match=r"APPLE_ENCRYPTION_KEY is wrong: .* not a Fernet key"):
        from_environ({**environ, "APPLE_ENCRYPTION_KEY": "secret"}, store=MemoryStore())
