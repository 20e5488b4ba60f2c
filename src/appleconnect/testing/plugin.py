"""The pytest plugin: ``apple_emulator`` and ``apple_emulator_session`` (docs/testing.md).

Registered through the ``pytest11`` entry point, so pytest loads this module in every project
where appleconnect is installed: it imports nothing beyond pytest until a test asks for a
fixture, and then says which extra to install if the emulator's dependencies are missing.

Each pytest process (each ``pytest-xdist`` worker) builds its own emulators, on ports the system
chooses, so workers never clash.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._emulator import AppleEmulator


def _build() -> AppleEmulator:
    try:
        from ._emulator import AppleEmulator
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        raise pytest.UsageError(
            f"The apple_emulator fixtures need the emulator's dependencies ({exc.name} is "
            "missing): pip install 'appleconnect[testing]'"
        ) from exc
    return AppleEmulator()


@pytest.fixture(scope="session")
def _apple_emulator_shared() -> Iterator[AppleEmulator]:
    """The emulator behind ``apple_emulator``: built (and its keys made) once per session."""
    emulator = _build()
    yield emulator
    emulator.close()


@pytest.fixture
def apple_emulator(_apple_emulator_shared: AppleEmulator) -> Iterator[AppleEmulator]:
    """A running emulator of Apple's side, fresh for this test (reset afterwards)."""
    yield _apple_emulator_shared
    _apple_emulator_shared.reset()


@pytest.fixture(scope="session")
def apple_emulator_session() -> Iterator[AppleEmulator]:
    """One emulator for the whole session, never reset: what one test does, the next sees."""
    emulator = _build()
    yield emulator
    emulator.close()
