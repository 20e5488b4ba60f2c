"""The ``appleconnect`` command.

This module is the composition root: it is the one place that may import the library, the
emulator and the service together. Heavy imports happen inside the commands, so that
``appleconnect secret`` works with the library's dependencies and ``click`` alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import click
except ImportError:  # pragma: no cover - exercised only without the extra installed
    click = None  # type: ignore[assignment]


def _missing_click() -> int:
    sys.stderr.write(
        "appleconnect: the command line needs the 'cli' extra: "
        "pip install 'appleconnect[cli]' (or 'appleconnect[server]')\n"
    )
    return 2


if click is not None:

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="appleconnect")
    def cli() -> None:
        """Sign in with Apple: client library tools, the Apple emulator and the service."""

    @cli.command("emulator")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
    @click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("appleconnect-emulator"),
        show_default=True,
        help="Where teams, keys, accounts, codes and tokens persist across restarts.",
    )
    @click.option(
        "--issuer",
        default=None,
        help="The iss of the tokens it signs (default https://appleid.apple.com, like Apple).",
    )
    @click.option(
        "--control-api/--no-control-api",
        default=None,
        help="Serve the /emulator/... control API (default: on when listening on loopback).",
    )
    def emulator_command(
        host: str, port: int, state_dir: Path, issuer: str | None, control_api: bool | None
    ) -> None:
        """Run the emulator of Apple's side of Sign in with Apple."""
        from appleconnect.emulator import serve

        serve(host=host, port=port, state_dir=state_dir, issuer=issuer, control_api=control_api)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``appleconnect`` console script."""
    if click is None:  # pragma: no cover
        return _missing_click()
    try:
        cli.main(args=argv, prog_name="appleconnect", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
