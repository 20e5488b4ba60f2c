"""The control API (``/emulator/...``): drive the emulator from tests and demos, in JSON.

It is everything Apple does not let you do on demand: consent without a browser, Apple ID
changes that trigger server-to-server notifications, key rotation, more teams and clients,
fault injection and a movable clock. It is off when the emulator is a public server.

The routes are grouped by what they drive: :mod:`.accounts` (test Apple IDs and the
notifications their changes send), :mod:`.signin` (the consent step without a browser),
:mod:`.directory` (teams, keys, client ids), :mod:`.email` (the Private Email Relay's sources,
mailboxes and log) and :mod:`.runtime` (faults, clock, settings).
"""

from __future__ import annotations

from fastapi import APIRouter

from . import accounts, directory, email, runtime, signin

__all__ = ["router"]

router = APIRouter()
router.include_router(runtime.router)
router.include_router(accounts.router)
router.include_router(signin.router)
router.include_router(directory.router)
router.include_router(email.router)
