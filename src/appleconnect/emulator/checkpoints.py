"""Checkpoints of an in-memory emulator: put it back exactly as it was, without new keys.

Building an emulator costs tens of milliseconds, nearly all of it making its RSA-2048 signing key
and the team's P-256 key. A test suite that wants a fresh emulator for every test builds one,
takes a :func:`checkpoint`, and calls :func:`restore_checkpoint` after each test: every record
(teams, keys, clients, Apple IDs, consents, codes, tokens, transfers, pending consent pages), the
settings (clock offset, claim format), the fault rules and the notification log go back to what
they were at the checkpoint. Only in-memory emulators (``state_dir=None``) can be restored: a state
directory is meant to outlive the process.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .faults import FaultInjector
from .notifications import Notifier
from .state import EmulatorState, StateError


@dataclass(frozen=True)
class Checkpoint:
    """A deep copy of an emulator's records and settings (see :func:`checkpoint`)."""

    records: dict[str, dict[str, Any]]
    settings: Any


def checkpoint(state: EmulatorState) -> Checkpoint:
    """Copy the state of an in-memory emulator, to :func:`restore_checkpoint` later."""
    _check_in_memory(state)
    with state.locked():
        return Checkpoint(copy.deepcopy(state._data), copy.deepcopy(state.settings))


def restore_checkpoint(
    state: EmulatorState,
    saved: Checkpoint,
    *,
    notifier: Notifier | None = None,
    faults: FaultInjector | None = None,
) -> None:
    """Put the emulator back as it was at ``saved``; clear the fault rules and delivery log too.

    Background notification deliveries are not cancelled here (they belong to an event loop):
    await ``notifier.aclose()`` first if any may be running.
    """
    _check_in_memory(state)
    with state.locked():
        state._data = copy.deepcopy(saved.records)
        state.settings = copy.deepcopy(saved.settings)
        # Parsed signing keys are cached by kid; keep those of the restored keys only.
        kept = saved.records["signing_key"]
        for kid in [kid for kid in state._signers if kid not in kept]:
            del state._signers[kid]
    if notifier is not None:
        notifier.clear_log()
    if faults is not None:
        faults.clear()


def _check_in_memory(state: EmulatorState) -> None:
    if state.state_dir is not None:
        raise StateError(
            "Only an in-memory emulator (state_dir=None) can be checkpointed and restored."
        )
