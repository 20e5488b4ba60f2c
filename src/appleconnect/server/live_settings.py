"""The live settings: the ones a process started with, with those edited in the admin panel laid
over them, effective without a restart in every process.

The admin panel stores each edited setting in the database (``settings`` table; secrets
encrypted), together with a version stamp (the row ``_version``) that changes on every save. Each
process checks the stamp at most every :data:`CHECK_INTERVAL` seconds, before handling a request,
and when it changed it loads the stored values, lays them over the settings the process started
with (configuration file and environment), validates the result and applies it. So a change made
in one process reaches the others within about a second, and the process that made it applies it
at once. When the stored settings cannot be read (the database is away), the settings in force
stay, and the next check comes after the same interval: never a failed request for it.

Applying means swapping, never editing: the result is a new frozen :class:`Settings` that
replaces ``ServiceContainer.settings``, which every route reads afresh on each request. When an
Apple setting changed, the service's :class:`AppleGateway` is rebuilt too (its clients hold the
client ids and secrets), and the composition root is told through ``on_apple_settings_changed``
(sandbox mode uses it to register a new redirect URI or client id with the in-process emulator,
which this package does not know).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select

from .apple import AppleGateway
from .container import ServiceContainer
from .db import DbSession
from .health import is_database_unavailable
from .models import SettingValue, utcnow
from .security import Encryptor
from .settings import Secret, Settings, SettingsError

__all__ = [
    "CHECK_INTERVAL",
    "EDITABLE",
    "EXTRAS",
    "AppleSettingsHook",
    "LiveSettings",
    "stored_settings",
]

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
"""Seconds between two checks of the version stamp in one process."""

VERSION_KEY = "_version"

# Settings fields the panel may change, and whether the value is a secret (stored encrypted).
EDITABLE: dict[str, bool] = {
    "redirect_uri": False,
    "client_id": False,
    "app_ids": False,
    "team_id": False,
    "key_id": False,
    "private_key": True,
    "client_secret": True,
    "default_role": False,
    "welcome_email": False,
    "mail_from": False,
    "welcome_subject": False,
    "smtp_host": False,
    "smtp_port": False,
    "smtp_security": False,
    "smtp_username": False,
    "smtp_password": True,
}
# Values that are not Settings fields but live beside them (the embed script's allowed origins).
EXTRAS: dict[str, bool] = {"embed_allowed_origins": False}

APPLE_FIELDS = frozenset(
    {"redirect_uri", "client_id", "app_ids", "team_id", "key_id", "private_key", "client_secret"}
)
_SECRET_FIELDS = frozenset({"private_key", "client_secret", "smtp_password"})


def _decode(name: str, raw: Any) -> Any:
    """A stored JSON value as the Settings field's type."""
    if name in _SECRET_FIELDS:
        return Secret(str(raw))
    if name == "app_ids" or name == "embed_allowed_origins":
        return tuple(str(v) for v in raw)
    return raw


def _encode(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.get()
    if isinstance(value, tuple):
        return list(value)
    return value


AppleSettingsHook = Callable[[Settings], None]
"""Called with the new settings after an Apple setting changed (see ``create_app``)."""


@dataclass
class LiveSettings:
    """The settings of one app: what it started with and what the panel stored. The settings
    that apply are ``ServiceContainer.settings``, replaced (never edited) by :meth:`refresh`; the
    middleware :class:`~appleconnect.server.middleware.SettingsMiddleware` calls it before each
    request."""

    base: Settings
    apple_transport: httpx.AsyncBaseTransport | None = None
    on_apple_settings_changed: AppleSettingsHook | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    checked_at: float = float("-inf")
    interval: float = CHECK_INTERVAL
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    first_check: asyncio.Event = field(default_factory=asyncio.Event)
    last_error: str = ""

    def source(self, name: str) -> str:
        """``"panel"`` when the admin panel set ``name``, else ``"configuration"``."""
        return "panel" if name in self.overrides else "configuration"

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        value = self.extras.get("embed_allowed_origins", ())
        return tuple(value)

    def candidate(self, changes: Mapping[str, Any]) -> Settings:
        """The settings that ``changes`` (on top of the stored overrides) would give; validated.

        A change to an Apple setting must leave them complete (the panel's Apple form sets them
        together); other changes are accepted while the Apple settings are still missing.
        Raises :class:`SettingsError` naming the setting that is wrong.
        """
        merged = {**self.overrides, **changes}
        settings = dataclasses.replace(self.base, **merged)
        settings.validate(apple=bool(changes.keys() & APPLE_FIELDS))
        pem = settings.private_key_pem()
        if not settings.apple_missing(private_key_pem=pem):
            try:
                # Build (and discard) the clients: every client id, key and secret must load.
                AppleGateway(settings, private_key_pem=pem)
            except (ValueError, TypeError) as exc:
                raise SettingsError(str(exc)) from None
        return settings

    async def refresh(self, service: ServiceContainer, *, force: bool = False) -> None:
        """Apply the stored settings when their version changed (checked at most per interval).

        One request checks; the requests that come while it does go on with the settings in
        force, as they would have a moment earlier, except before the first check has ended:
        the stored settings apply from the first request on. (Queued behind the check on the
        lock instead, they were let through one per turn of the event loop: 64 requests that
        came at once took 0.4 s to drain, docs/performance.md#tails.) ``force`` (the admin
        panel saved just now) waits for a check under way and checks again.
        """
        if force:
            async with self.lock:
                await self._check(service, force=True)
            return
        if time.monotonic() - self.checked_at < self.interval:
            return
        if self.lock.locked():
            if not self.first_check.is_set():
                await self.first_check.wait()
            return
        async with self.lock:
            await self._check(service, force=False)

    async def _check(self, service: ServiceContainer, *, force: bool) -> None:
        try:
            try:
                loaded = await self._read(service, force=force)
            except Exception as exc:
                if force:  # the admin panel saved just now: its request reports the error
                    raise
                # Keep the settings in force and try again after the interval, not per request.
                self.checked_at = time.monotonic()
                self._failed(service, exc)
                return
            if loaded is not None:
                self._apply(service, *loaded)
        finally:
            self.first_check.set()

    async def _read(
        self, service: ServiceContainer, *, force: bool
    ) -> tuple[dict[str, Any], dict[str, Any], str | None] | None:
        """The stored settings and their version; None when the version did not change."""
        async with service.sessions() as db:
            version = await db.scalar(
                select(SettingValue.value).where(SettingValue.key == VERSION_KEY)
            )
            self.checked_at = time.monotonic()
            if version == self.version and not force:
                return None
            overrides, extras = await _load(db, service.encryptor)
        return overrides, extras, version

    def _failed(self, service: ServiceContainer, exc: Exception) -> None:
        if is_database_unavailable(exc):
            service.health.failed(exc)  # logs once per outage
            return
        message = f"{type(exc).__name__}: {exc}"
        if message != self.last_error:  # once per distinct error, not once per interval
            self.last_error = message
            log.error("the stored settings cannot be read; the current ones stay: %s", message)

    def _apply(
        self,
        service: ServiceContainer,
        overrides: dict[str, Any],
        extras: dict[str, Any],
        version: str | None,
    ) -> None:
        try:
            target = _overlay(self.base, overrides)
        except SettingsError as exc:
            log.error("the settings stored by the admin panel are not applied: %s", exc)
            self.version = version
            return
        current = service.settings
        changed = {
            f.name
            for f in dataclasses.fields(Settings)
            if getattr(target, f.name) != getattr(current, f.name)
        }
        apple_changed = bool(changed & APPLE_FIELDS)
        gateway = None
        if apple_changed:
            try:
                gateway = AppleGateway(
                    target,
                    private_key_pem=target.private_key_pem(),
                    transport=self.apple_transport,
                )
            except (ValueError, TypeError) as exc:
                log.error("the Apple settings stored by the admin panel are not applied: %s", exc)
                self.version = version
                return
        # Nothing awaits between here and the end, so a request sees either the old settings
        # and gateway or the new ones, never a mix.
        if changed:
            service.settings = target
        self.overrides, self.extras, self.version = overrides, extras, version
        if gateway is not None:
            old, service.apple = service.apple, gateway
            service.spawn(_close_later(old), daemon=True)
        if apple_changed and self.on_apple_settings_changed is not None:
            try:
                self.on_apple_settings_changed(target)
            except Exception:  # the hook belongs to the composition root; keep serving
                log.exception("on_apple_settings_changed failed")


def _overlay(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``base`` with the panel's stored values on top, validated (Apple settings may be
    missing: the service then answers ``not_configured``)."""
    settings = dataclasses.replace(base, **overrides)
    settings.validate(apple=False)
    return settings


async def stored_settings(*, db: DbSession, encryptor: Encryptor, base: Settings) -> Settings:
    """The settings a process started from ``base`` applies once it has read what the admin
    panel stored: for commands and start-up messages that run without a service.

    Raises :class:`SettingsError` when the stored values do not validate over ``base``.
    """
    overrides, _extras = await _load(db, encryptor)
    return _overlay(base, overrides)


async def _close_later(gateway: AppleGateway, delay: float = 30.0) -> None:
    """Close a replaced gateway once the requests that still hold it have finished."""
    try:
        await asyncio.sleep(delay)
    finally:
        await gateway.aclose()


async def _load(db: DbSession, encryptor: Encryptor) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = (await db.scalars(select(SettingValue))).all()
    overrides: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for row in rows:
        target = overrides if row.key in EDITABLE else extras if row.key in EXTRAS else None
        if target is None:
            continue
        try:
            text = encryptor.decrypt(row.value) if row.encrypted else row.value
            # Secrets are stored as their text (as ``store.save_setting`` does, which the
            # service reads at start for the .p8 key); everything else as JSON.
            target[row.key] = _decode(
                row.key, text if row.key in _SECRET_FIELDS else json.loads(text)
            )
        except ValueError as exc:
            log.error("the stored setting %s cannot be read: %s", row.key, exc)
    return overrides, extras


async def save(
    *,
    db: DbSession,
    encryptor: Encryptor,
    changes: Mapping[str, Any],
    remove: tuple[str, ...] = (),
) -> None:
    """Store changed settings (secrets encrypted) and a new version stamp; caller commits."""
    now = utcnow()
    for name, value in changes.items():
        secret = EDITABLE.get(name, EXTRAS.get(name))
        if secret is None:
            raise KeyError(name)
        text = value.get() if isinstance(value, Secret) else json.dumps(_encode(value))
        stored = encryptor.encrypt(text) if secret else text
        row = await db.get(SettingValue, name)
        if row is None:
            db.add(SettingValue(key=name, value=stored, encrypted=secret, updated_at=now))
        else:
            row.value, row.encrypted, row.updated_at = stored, secret, now
    for name in remove:
        row = await db.get(SettingValue, name)
        if row is not None:
            await db.delete(row)
    stamp = secrets.token_hex(8)
    row = await db.get(SettingValue, VERSION_KEY)
    if row is None:
        db.add(SettingValue(key=VERSION_KEY, value=stamp, encrypted=False, updated_at=now))
    else:
        row.value, row.updated_at = stamp, now
