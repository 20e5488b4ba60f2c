"""The ``appleconnect`` command.

This module is the composition root: it is the one place that may import the library, the
emulator and the service together. Heavy imports happen inside the commands, so that
``appleconnect secret`` works with the library's dependencies and ``click`` alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

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


CONTROL_API_HELP = (
    "Serve the emulator's control API at {where}. It gives anyone who can reach the address "
    "the emulated team's credentials with its private key, the test accounts, the clock and "
    "fault injection. Default: on when listening on a loopback address, off on any other."
)

if click is not None:

    def _example(*lines: str) -> str:
        """A command's epilog: its examples, kept as written (``\b`` stops click's rewrapping)."""
        return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)

    def _server_limit_options(command: Callable[..., None]) -> Callable[..., None]:
        """The slow-client options that ``serve`` and ``emulator`` share."""
        options = [
            click.option(
                "--header-timeout",
                type=click.FloatRange(0, 3600, min_open=True),
                default=10.0,
                show_default=True,
                help="Seconds a client has to send a request's line and headers; then 408 and "
                "the connection is closed.",
            ),
            click.option(
                "--body-timeout",
                type=click.FloatRange(0, 3600, min_open=True),
                default=30.0,
                show_default=True,
                help="Seconds a client has, once the headers are in, to send the declared "
                "body; then 408 (or a closed connection).",
            ),
            click.option(
                "--max-connections",
                type=click.IntRange(1, 100_000),
                default=500,
                show_default=True,
                help="Connections served at once; a request on one more is answered 503.",
            ),
            click.option(
                "--log-format",
                type=click.Choice(["text", "json"]),
                default=None,
                envvar="APPLECONNECT_LOG_FORMAT",
                help="Log lines as text (time level logger [request id] message) or one JSON "
                "object per line (default: APPLECONNECT_LOG_FORMAT or the log_format setting, "
                "else text).",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    def _server_limits(values: dict[str, Any]) -> Any:
        from appleconnect._serving import ServerLimits

        return ServerLimits(
            header_timeout=values["header_timeout"],
            body_timeout=values["body_timeout"],
            max_connections=values["max_connections"],
            log_format=values["log_format"] or "text",
        )

    @click.group(
        context_settings={"help_option_names": ["-h", "--help"]},
        epilog=_example(
            "appleconnect serve", "appleconnect doctor --demo", "appleconnect serve --help"
        ),
    )
    @click.version_option(package_name="appleconnect")
    def cli() -> None:
        """Sign in with Apple: client library tools, the Apple emulator and the service."""

    def _fail(message: str, code: int = 2) -> NoReturn:
        click.echo(f"appleconnect: {message}", err=True)
        raise SystemExit(code)

    def _refuse_renamed_variables() -> None:
        """An exported variable that an older version read is named, with what replaced it,
        instead of being ignored."""
        import os

        from appleconnect._constants import RENAMED_VARIABLES

        for old, new in RENAMED_VARIABLES.items():
            if old in os.environ:
                _fail(f"{old} is no longer read: use {new}, as the service does.")

    def _client_id_list(
        values: tuple[str, ...], variables: tuple[str, ...] = (), option: str = "--client-id"
    ) -> tuple[str, ...]:
        """``option``'s values (repeated and/or comma-separated) or, without any, those of
        ``variables`` (the service's ``APPLECONNECT_CLIENT_ID`` and ``APPLECONNECT_APP_IDS``)."""
        import os

        from appleconnect._lists import split_list

        try:
            if values:
                return split_list(values, what=option, option=option)
            ids: list[str] = []
            for variable in variables:
                if variable == "APPLECONNECT_CLIENT_ID" and "," in os.environ.get(variable, ""):
                    _fail(
                        f"{variable}: {os.environ[variable]!r} is not one Services ID; put the "
                        "App IDs in APPLECONNECT_APP_IDS=a,b (or give --client-id a,b)."
                    )
                ids += split_list(os.environ.get(variable, ""), what=variable, variable=variable)
            return tuple(dict.fromkeys(ids))
        except ValueError as exc:
            _fail(str(exc))

    @cli.command(
        "secret",
        epilog=_example(
            "appleconnect secret --team-id ABCDE12345 --key-id KEY1234567 \\",
            "    --client-id com.example.web --key-file AuthKey_KEY1234567.p8",
        ),
    )
    @click.option(
        "--team-id",
        required=True,
        envvar="APPLECONNECT_TEAM_ID",
        help="10-character Team ID (or APPLECONNECT_TEAM_ID, the service's team_id).",
    )
    @click.option(
        "--key-id",
        required=True,
        envvar="APPLECONNECT_KEY_ID",
        help="10-character Key ID (or APPLECONNECT_KEY_ID, the service's key_id).",
    )
    @click.option(
        "--client-id",
        required=True,
        envvar="APPLECONNECT_CLIENT_ID",
        help="The one Services ID (web) or App ID (native) the secret is for, its sub "
        "(or APPLECONNECT_CLIENT_ID, the service's client_id).",
    )
    @click.option(
        "--key-file",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="APPLECONNECT_PRIVATE_KEY_FILE",
        help="The AuthKey_<KEYID>.p8 file (or APPLECONNECT_PRIVATE_KEY_FILE, the service's "
        "private_key_file).",
    )
    @click.option(
        "--ttl",
        type=click.IntRange(60, 15_777_000),
        default=86_400,
        show_default=True,
        help="Lifetime in seconds (Apple's maximum is 15777000, about six months).",
    )
    def secret_command(team_id: str, key_id: str, client_id: str, key_file: Path, ttl: int) -> None:
        """Print a client secret (ES256 JWT) for Apple's token, revoke and migration calls."""
        from appleconnect import ClientSecret
        from appleconnect.checks import validate_client_id, validate_team_or_key_id

        _refuse_renamed_variables()
        checks: list[tuple[str, Callable[[], object]]] = [
            ("team_id", lambda: validate_team_or_key_id(team_id, "Team ID")),
            ("key_id", lambda: validate_team_or_key_id(key_id, "Key ID")),
            ("client_id", lambda: validate_client_id(client_id, team_id.strip())),
        ]
        for name, check in checks:
            try:
                check()
            except (ValueError, TypeError) as exc:
                _fail(f"{_given_by(name)}: {exc}")
        try:
            secret = ClientSecret(team_id, key_id, client_id, key_file.read_bytes(), ttl=ttl)
        except (ValueError, TypeError) as exc:
            _fail(f"{_given_by('key_file')}: {exc}")
        click.echo(secret.token)

    def _given_by(name: str) -> str:
        """Where the current command's parameter ``name`` came from: its option, or the
        environment variable that set it (so an error names the variable to fix)."""
        from click.core import ParameterSource

        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == name)
        if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT:
            return str(param.envvar)
        return param.opts[0]

    @cli.command(
        "verify-token",
        epilog=_example(
            "appleconnect verify-token eyJraWQi... --client-id com.example.app,com.example.web",
            "appleconnect verify-token - --client-id com.example.app \\",
            "    --base-url http://127.0.0.1:8080 < token.txt",
        ),
    )
    @click.argument("token")
    @click.option(
        "--client-id",
        "client_ids",
        multiple=True,
        required=True,
        help="Accepted audiences: the App ID and/or the Services ID, repeated "
        "(--client-id a --client-id b) or comma-separated (--client-id a,b).",
    )
    @click.option("--nonce", default=None, help="The raw nonce sent in the authorization request.")
    @click.option(
        "--base-url",
        default=None,
        help="Fetch keys from this base URL's /auth/keys (default Apple's; the emulator's URL).",
    )
    @click.option(
        "--jwks-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Verify with the keys in this JWKS file instead of fetching them.",
    )
    @click.option(
        "--leeway",
        type=click.IntRange(0, 600),
        default=60,
        show_default=True,
        help="Seconds of clock skew allowed when checking the token's exp and iat (0 to 600).",
    )
    def verify_token_command(
        token: str,
        client_ids: tuple[str, ...],
        nonce: str | None,
        base_url: str | None,
        jwks_file: Path | None,
        leeway: int,
    ) -> None:
        """Verify an identity token and print its claims as JSON (TOKEN may be - for stdin).

        Exits 1 with one line naming the failed check when the token is not valid.
        """
        import json

        from appleconnect import (
            APPLE_BASE_URL,
            AppleConnectError,
            AppleKeys,
            InvalidToken,
            verify_identity_token,
        )

        client_ids = _client_id_list(client_ids)
        if token == "-":  # noqa: S105 - "-" means standard input, not a password
            token = sys.stdin.read(65536).strip()
        if base_url and jwks_file:
            _fail("give either --base-url or --jwks-file, not both")
        try:
            if jwks_file is not None:
                keys = AppleKeys.from_jwks(json.loads(jwks_file.read_text()))
            else:
                keys = AppleKeys(base_url=base_url or APPLE_BASE_URL)
        except ValueError as exc:
            _fail(f"{jwks_file}: {exc}")
        try:
            result = verify_identity_token(
                token, keys, audiences=client_ids, nonce=nonce, leeway=leeway
            )
        except InvalidToken as exc:
            _fail(f"invalid identity token: {exc.reason}: {exc}", code=1)
        except AppleConnectError as exc:
            _fail(str(exc), code=1)
        finally:
            keys.close()
        click.echo(json.dumps(dict(result.claims), indent=2, sort_keys=True))

    @cli.command(
        "doctor",
        epilog=_example(
            "appleconnect doctor --team-id ABCDE12345 --key-id KEY1234567 \\",
            "    --client-id com.example.web,com.example.app --key-file AuthKey_KEY1234567.p8 \\",
            "    --redirect-uri https://login.example.com/auth/apple/callback",
            "appleconnect doctor --demo",
        ),
    )
    @click.option(
        "--team-id",
        envvar="APPLECONNECT_TEAM_ID",
        default=None,
        help="The 10-character Team ID to check, from Membership details in the Apple "
        "Developer account (or APPLECONNECT_TEAM_ID, the service's team_id).",
    )
    @click.option(
        "--key-id",
        envvar="APPLECONNECT_KEY_ID",
        default=None,
        help="The 10-character Key ID of the Sign in with Apple key, as in its AuthKey_<KEYID>.p8 "
        "file name (or APPLECONNECT_KEY_ID, the service's key_id).",
    )
    @click.option(
        "--client-id",
        "client_ids",
        multiple=True,
        help="Services ID and/or App IDs, repeated (--client-id a --client-id b) or "
        "comma-separated (--client-id a,b); default: APPLECONNECT_CLIENT_ID and "
        "APPLECONNECT_APP_IDS, the service's client_id and app_ids.",
    )
    @click.option(
        "--key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="APPLECONNECT_PRIVATE_KEY_FILE",
        default=None,
        help="The AuthKey_<KEYID>.p8 file (or APPLECONNECT_PRIVATE_KEY_FILE, the service's "
        "private_key_file).",
    )
    @click.option(
        "--redirect-uri",
        "redirect_uris",
        multiple=True,
        help="A redirect URI to check against Apple's rules (repeat the option).",
    )
    @click.option(
        "--client-secret",
        envvar="APPLECONNECT_CLIENT_SECRET",
        default=None,
        help="A pasted client secret to check (instead of, or beside, the key).",
    )
    @click.option(
        "--sandbox",
        is_flag=True,
        help="Check for the emulator: plain HTTP and localhost redirect URIs are allowed.",
    )
    @click.option(
        "--demo",
        is_flag=True,
        help="Generate a demo configuration (key, IDs, redirect URI) and check it.",
    )
    @click.option(
        "--demo-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("appleconnect-demo"),
        show_default=True,
        help="Where --demo writes its key and configuration.",
    )
    def doctor_command(
        team_id: str | None,
        key_id: str | None,
        client_ids: tuple[str, ...],
        key_file: Path | None,
        redirect_uris: tuple[str, ...],
        client_secret: str | None,
        sandbox: bool,
        demo: bool,
        demo_dir: Path,
    ) -> None:
        """Check a Sign in with Apple configuration offline; one PASS/WARN/FAIL line per check.

        Every check targets a usual cause of Apple's reasonless invalid_client. Exits 1 when any
        check fails.
        """
        from appleconnect.checks import run_checks

        _refuse_renamed_variables()
        client_ids = _client_id_list(client_ids, ("APPLECONNECT_CLIENT_ID", "APPLECONNECT_APP_IDS"))
        if demo:
            team_id, key_id, client_ids, key_file, redirect_uris = _demo_configuration(demo_dir)
            sandbox = True
            click.echo(f"Demo configuration in {demo_dir}/ (sandbox: checked for the emulator)")
        checks = run_checks(
            team_id=team_id,
            key_id=key_id,
            client_ids=client_ids,
            key_path=str(key_file) if key_file else None,
            redirect_uris=redirect_uris,
            client_secret=client_secret,
            sandbox=sandbox,
        )
        width = max(len(c.name) for c in checks)
        for check in checks:
            click.echo(f"{check.label}  {check.name:<{width}}  {check.detail}")
        failed = sum(not c.ok for c in checks)
        click.echo(f"doctor: {len(checks) - failed} of {len(checks)} checks passed")
        if failed:
            raise SystemExit(1)

    def _demo_configuration(
        directory: Path,
    ) -> tuple[str, str, tuple[str, ...], Path, tuple[str, ...]]:
        """Create (once) a demo key and return a configuration that uses it."""
        import json

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        team_id, key_id = "DEMOTEAM01", "DEMOKEY001"
        key_file = directory / f"AuthKey_{key_id}.p8"
        directory.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            key_file.touch(mode=0o600)
            key_file.write_bytes(pem)
        config = {
            "team_id": team_id,
            "key_id": key_id,
            "client_ids": ["com.example.demo.web", "com.example.demo"],
            "key_file": key_file.name,
            "redirect_uris": ["http://127.0.0.1:8000/auth/apple/callback"],
        }
        (directory / "demo.json").write_text(json.dumps(config, indent=2) + "\n")
        return (
            team_id,
            key_id,
            tuple(config["client_ids"]),
            key_file,
            tuple(config["redirect_uris"]),
        )

    @cli.command(
        "emulator",
        epilog=_example(
            "appleconnect emulator --state-dir ./apple-state --smtp-port 2525",
            "appleconnect emulator --host 0.0.0.0 --no-control-api",
        ),
    )
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
        help=CONTROL_API_HELP.format(where="/emulator/..."),
    )
    @click.option(
        "--smtp-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="Also run the Private Email Relay's SMTP server on this port (0: a free one).",
    )
    @_server_limit_options
    def emulator_command(
        host: str,
        port: int,
        state_dir: Path,
        issuer: str | None,
        control_api: bool | None,
        smtp_port: int | None,
        **limits: Any,
    ) -> None:
        """Run the emulator of Apple's side of Sign in with Apple."""
        from appleconnect._logredact import install_log_redaction
        from appleconnect._serving import listen_problem, run_server
        from appleconnect.emulator import serve

        problem = listen_problem(host, port)
        if problem:  # before the banner and before anything is written to the state directory
            _fail(problem, 1)
        install_log_redaction()
        serve(
            host=host,
            port=port,
            state_dir=state_dir,
            issuer=issuer,
            control_api=control_api,
            server_options=_server_limits(limits).uvicorn_options(),
            smtp_port=smtp_port,
            run=run_server,  # exits 0 after SIGTERM (uvicorn.run re-raises the signal: 143)
        )

    @cli.command(
        "emulator-transfer",
        epilog=_example(
            "appleconnect emulator-transfer --app-id com.example.app --to-team TEAMB12345"
        ),
    )
    @click.option(
        "--url",
        default="http://127.0.0.1:8080",
        show_default=True,
        help="The running emulator's base URL (its control API must be on).",
    )
    @click.option("--app-id", required=True, help="The App ID that moves, with its Services IDs.")
    @click.option("--to-team", required=True, help="The recipient's Team ID.")
    @click.option(
        "--services-id",
        "services_ids",
        multiple=True,
        help="Services IDs that move with it, repeated or comma-separated (default: every one "
        "of the sending team).",
    )
    @click.option(
        "--at",
        type=float,
        default=None,
        help="When the transfer completes, in Unix seconds of the emulator's clock (default: now).",
    )
    def emulator_transfer_command(
        url: str, app_id: str, to_team: str, services_ids: tuple[str, ...], at: float | None
    ) -> None:
        """Transfer an app to another team in a running emulator, as Apple does.

        Before the transfer the recipient is refused for the app's client ids; after it the
        sender is, sign-ins give the recipient's subs, and the 60-day user-migration window
        counts from it. Prints the transfer as JSON.
        """
        import json

        from appleconnect.emulator.remote import RemoteError, transfer_app

        services_ids = _client_id_list(services_ids, option="--services-id")
        try:
            done = transfer_app(
                url, app_id=app_id, to_team=to_team, services_ids=list(services_ids) or None, at=at
            )
        except RemoteError as exc:
            _fail(str(exc), 1)
        click.echo(json.dumps(done, indent=2))

    @cli.command(
        "emulator-email-sources",
        epilog=_example(
            "appleconnect emulator-email-sources add --domain mail.example.com",
            "appleconnect emulator-email-sources remove --email hello@example.org",
            "appleconnect emulator-email-sources",
        ),
    )
    @click.argument("action", type=click.Choice(["list", "add", "remove"]), default="list")
    @click.option(
        "--url",
        default="http://127.0.0.1:8080",
        show_default=True,
        help="The running emulator's base URL (its control API must be on).",
    )
    @click.option("--team-id", default=None, help="The team (default: the emulator's own).")
    @click.option("--domain", default=None, help="A domain to add or remove.")
    @click.option("--email", default=None, help="An individual address to add or remove.")
    @click.option("--dkim-selector", default=None, help="With --domain: the DKIM selector.")
    @click.option(
        "--dkim-public-key",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="With --domain: a PEM file with the DKIM public key (instead of DNS).",
    )
    def emulator_email_sources_command(
        action: str,
        url: str,
        team_id: str | None,
        domain: str | None,
        email: str | None,
        dkim_selector: str | None,
        dkim_public_key: Path | None,
    ) -> None:
        """List, add or remove the email sources of a team at a running emulator's Private Email
        Relay (Apple's limits: 32 for an individual membership, 100 for an organisation).
        Prints the team's sources as JSON.
        """
        import json

        from appleconnect.emulator.remote import RemoteError, call_control

        body: dict[str, Any] = {
            k: v
            for k, v in {"team_id": team_id, "domain": domain, "email": email}.items()
            if v is not None
        }
        if dkim_selector is not None or dkim_public_key is not None:
            if dkim_selector is None or dkim_public_key is None:
                _fail("--dkim-selector and --dkim-public-key go together.")
            body["dkim_selector"] = dkim_selector
            body["dkim_public_key"] = dkim_public_key.read_text()[:8192]
        path = "/emulator/email-sources"
        try:
            if action == "add":
                call_control(url, "POST", path, body, expect=(200, 201), what="the source")
            elif action == "remove":
                call_control(url, "DELETE", path, body, expect=204, what="the removal")
            params = {"team_id": team_id} if team_id else None
            listed = call_control(url, "GET", path, params=params, what="the listing")
        except RemoteError as exc:
            _fail(str(exc), 1)
        click.echo(json.dumps(listed, indent=2))


if click is not None:

    @cli.command(
        "serve",
        epilog=_example(
            "appleconnect serve",
            "appleconnect serve --port 8001 --data-dir ./appleconnect-data",
            "appleconnect serve --config appleconnect.toml --host 0.0.0.0",
            "appleconnect serve --config appleconnect.toml --workers 4",
            "appleconnect serve --no-rate-limits   (to fuzz a sandbox)",
        ),
    )
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("appleconnect-data"),
        show_default=True,
        help="Where the SQLite database, the sandbox emulator's state and keys live.",
    )
    @click.option(
        "--config",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="A TOML configuration file (production); without one, sandbox mode.",
    )
    @click.option(
        "--control-api/--no-control-api",
        default=None,
        help=CONTROL_API_HELP.format(where="/apple/emulator/... (sandbox mode only)"),
    )
    @click.option(
        "--rate-limits/--no-rate-limits",
        default=True,
        show_default=True,
        help="Limit requests per client IP and per API key (sandbox mode only; in production "
        "the rate_limit_* settings decide). Off for fuzzing or load tests of a sandbox.",
    )
    @click.option(
        "--workers",
        type=click.IntRange(1, 64),
        default=None,
        envvar="APPLECONNECT_WORKERS",
        help="Service processes answering on the one port (default: APPLECONNECT_WORKERS or "
        "the workers setting, else 1). Above 1 needs production mode or an external emulator.",
    )
    @_server_limit_options
    def serve_command(
        host: str,
        port: int,
        data_dir: Path,
        config: Path | None,
        control_api: bool | None,
        rate_limits: bool,
        workers: int | None,
        **limits: Any,
    ) -> None:
        """Run the Apple Connect service (sandbox mode, with the emulator, when unconfigured).

        The banner's mode line says what chose the mode: APPLECONNECT_MODE, the --config file,
        a deployment variable (such as APPLECONNECT_DATABASE_URL), or nothing (the sandbox).
        """
        from appleconnect.sandbox import serve

        serve(
            host=host,
            port=port,
            data_dir=data_dir,
            config=config,
            control_api=control_api,
            limits=_server_limits(limits),
            rate_limits=rate_limits,
            log_format_given=limits["log_format"] is not None,
            workers=workers,
        )

    def _add_service_commands() -> None:
        # The service's commands need the 'server' extra; without it the library's commands
        # (secret, verify-token, doctor) still work.
        try:
            from appleconnect.server.commands import COMMANDS
        except ImportError:
            return
        for command in COMMANDS:
            cli.add_command(command)

    _add_service_commands()


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
