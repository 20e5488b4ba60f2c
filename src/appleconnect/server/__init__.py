"""The Apple Connect service: accounts and sessions from Sign in with Apple.

Build it with :func:`create_app` from a :class:`Settings` (see :func:`load_settings`). This
package talks to Apple only through the client library and never imports the emulator.
"""

from __future__ import annotations

from .app import create_app
from .settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]
