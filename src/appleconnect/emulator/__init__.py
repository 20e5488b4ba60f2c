"""The emulator of Apple's side of Sign in with Apple (``appleid.apple.com``), offline.

``create_emulator_app()`` returns an ASGI app that answers on Apple's paths exactly as Apple does
(docs/apple-protocol.md, docs/emulator.md), plus a JSON control API under ``/emulator``.
``serve()`` runs it with uvicorn; ``appleconnect emulator`` calls it. The emulator signs and
checks with joserfc and ``cryptography`` only and imports nothing from the client library
(docs/architecture.md#import-boundaries).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .app import create_emulator_app
from .checkpoints import Checkpoint, checkpoint, restore_checkpoint
from .faults import Fault, FaultInjector
from .notifications import Delivery, Notifier
from .records import DefaultTeam
from .smtp import RelayServer
from .state import EmulatorState, StateError

__all__ = [
    "Checkpoint",
    "DefaultTeam",
    "Delivery",
    "EmulatorState",
    "Fault",
    "FaultInjector",
    "Notifier",
    "RelayServer",
    "StateError",
    "checkpoint",
    "control_api_enabled",
    "create_emulator_app",
    "is_loopback",
    "restore_checkpoint",
    "serve",
    "start_relay_server",
]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def control_api_enabled(host: str, requested: bool | None) -> bool:
    """The one rule for the control API, standalone and in the service's sandbox: what the
    ``--control-api/--no-control-api`` flag says, else on only when ``host`` is loopback.

    It hands out the team's credentials with the private key, the test accounts, the clock and
    fault injection, so it is never served on a network address unless asked for.
    """
    return is_loopback(host) if requested is None else requested


def serve(
    *,
    host: str,
    port: int,
    state_dir: Path,
    issuer: str | None,
    control_api: bool | None,
    server_options: Mapping[str, Any] | None = None,
    smtp_port: int | None = None,
    run: Callable[..., None] | None = None,
) -> None:
    """Run the emulator with uvicorn until interrupted.

    ``smtp_port`` also runs the Private Email Relay's SMTP server on ``host`` (0: a free port).

    ``control_api=None`` serves the control API only on a loopback address. Prints where
    ``credentials.json`` is and the base URL to point a client at. ``server_options`` are more
    keyword arguments for ``uvicorn.run`` (``appleconnect emulator`` passes its timeouts);
    ``run`` replaces ``uvicorn.run`` (the command passes its graceful server, which exits 0
    after SIGTERM).
    """
    import uvicorn

    enabled = control_api_enabled(host, control_api)
    shown_host = f"[{host}]" if ":" in host else host
    base = f"http://{shown_host}:{port}"
    app = create_emulator_app(
        state_dir=state_dir,
        issuer=issuer or "https://appleid.apple.com",
        control_api=enabled,
        base_url=base,
    )
    state: EmulatorState = app.state.emulator
    smtp = start_relay_server(app, host=host, port=smtp_port) if smtp_port is not None else None
    credentials = state.write_credentials(base_url=base)
    out = sys.stdout
    out.write("appleconnect Apple ID emulator (not Apple)\n")
    out.write(f"  base URL:          {base}\n")
    out.write(f"  issuer:            {state.issuer}\n")
    out.write(f"  credentials.json:  {credentials}\n")
    out.write(f"  team / key:        {state.default_team.team_id} / {state.default_team.key_id}\n")
    out.write(
        f"  client ids:        {state.default_team.services_id} (web), "
        f"{state.default_team.app_id} (native)\n"
    )
    out.write(f"  control API:       {f'{base}/emulator' if enabled else 'off'}\n")
    if smtp is not None:
        out.write(f"  email relay SMTP:  {shown_host}:{smtp.port}\n")
    out.flush()
    try:
        (run or uvicorn.run)(app, host=host, port=port, log_level="info", **(server_options or {}))
    finally:
        if smtp is not None:
            smtp.stop()
        state.close()


def start_relay_server(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> RelayServer:
    """Start the SMTP server of the emulator ``app``'s Private Email Relay (port 0: a free one);
    ``app.state.smtp_address`` and ``GET /emulator/relay`` then say where. Stop it with
    ``.stop()``."""
    server = RelayServer(app.state.relay, host=host, port=port)
    app.state.smtp_address = app.state.emulator.smtp_address = server.start()
    return server
