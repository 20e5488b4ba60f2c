"""Shared fixtures for the framework integrations: an ``AppleSignIn`` configured for the
``apple_emulator`` fixture, with the test client's host registered as a return URL."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from integration_helpers import CALLBACK

from appleconnect.integrations import AppleSignIn, MemoryStore
from appleconnect.testing import AppleEmulator


@pytest.fixture
def apple_sign_in(apple_emulator: AppleEmulator) -> AppleSignIn:
    """The framework-neutral core, talking to the emulator in-process."""
    apple_emulator.register_redirect_uri(CALLBACK)
    return AppleSignIn(
        apple_emulator.client(),
        redirect_uri=CALLBACK,
        store=MemoryStore(),
        encryption_key=Fernet.generate_key().decode(),
    )
