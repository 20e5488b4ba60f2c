"""Test kit: the Apple ID emulator for your own test suite (``pip install appleconnect[testing]``).

The pytest plugin (:mod:`appleconnect.testing.plugin`, registered through the ``pytest11`` entry
point) provides the ``apple_emulator`` fixture (one per test, reset between tests) and
``apple_emulator_session`` (one per session). Both are an :class:`AppleEmulator`; see
docs/testing.md. Outside pytest, build an :class:`AppleEmulator` yourself and ``close()`` it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._records import Account, Credentials, EmulatorError, SentNotification, SignIn

if TYPE_CHECKING:
    from ._emulator import IN_PROCESS_URL, AppleEmulator

__all__ = [
    "IN_PROCESS_URL",
    "Account",
    "AppleEmulator",
    "Credentials",
    "EmulatorError",
    "SentNotification",
    "SignIn",
]


def __getattr__(name: str) -> Any:
    # The emulator (FastAPI, uvicorn) is imported on first use: pytest imports the plugin, and
    # with it this package, in every project where appleconnect is installed.
    if name in ("AppleEmulator", "IN_PROCESS_URL"):
        from . import _emulator

        return getattr(_emulator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
