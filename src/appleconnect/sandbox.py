"""The composition root of ``appleconnect serve``.

In sandbox mode the emulator of Apple's side is mounted in-process under ``/apple``, the
service is pointed at it, and everything lives in the data directory; in production mode the
service runs alone against the configured Apple. ``settings.choose_mode`` decides which, and the
banner says what chose it. This is the one module that knows both the service and the emulator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from appleconnect._logredact import install_log_redaction
from appleconnect._serving import ServerLimits, listen_problem, run_server
from appleconnect.logformat import LogFormat, RequestIdMiddleware
from appleconnect.server import Settings, create_app, load_settings, store
from appleconnect.server.commands import SERVED_URL_FILE, CommandError, admin_login_url
from appleconnect.server.db import create_engine, migrate, session_factory
from appleconnect.server.files import private_dir, private_file
from appleconnect.server.live_settings import stored_settings
from appleconnect.server.reads import Reads
from appleconnect.server.relay_mail import required_sources
from appleconnect.server.security import load_encryptor
from appleconnect.server.settings import (
    DEPLOYMENT_SETTINGS,
    ENV_PREFIX,
    ModeChoice,
    Secret,
    SettingsError,
    choose_mode,
)

__all__ = [
    "APPLE_PREFIX",
    "Composed",
    "Sandbox",
    "build_sandbox_app",
    "compose",
    "register_with_emulator",
    "serve",
]

APPLE_PREFIX = "/apple"
DEMO_KEY_FILE = "demo-api-key.txt"

log = logging.getLogger(__name__)


@dataclass
class Sandbox:
    """The combined app and what it is made of (tests reach into ``emulator``).

    ``settings`` are the start-up settings; the ones in force, after any change made in the
    admin panel, are ``service_app.state.container.settings``.
    """

    app: Starlette
    service_app: Any
    emulator_app: Any
    settings: Settings
    transport: httpx.ASGITransport


def build_sandbox_app(
    data_dir: Path,
    *,
    public_url: str = "http://127.0.0.1:8000",
    overrides: Mapping[str, Any] | None = None,
    emulator_state_dir: Path | None = None,
    outbound_transport: httpx.AsyncBaseTransport | None = None,
    control_api: bool = True,
    relay_smtp: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Sandbox:
    """The service plus the emulator at ``/apple``, as one ASGI app, with nothing global.

    The service reaches "Apple" and the emulator reaches the service's notification endpoint
    through in-process ASGI transports: no socket is needed, so tests can use it as it is.
    ``control_api`` mounts the emulator's control API at ``/apple/emulator/…`` (``serve``
    decides with :func:`appleconnect.emulator.control_api_enabled`). ``relay_smtp`` runs the
    emulator's Private Email Relay on a free loopback port while the app runs, for the service's
    mail to relay addresses (docs/service.md). ``environ``: variables for the settings the
    sandbox does not set itself (``serve`` passes its own; by default none is read).
    """
    from appleconnect.emulator import create_emulator_app

    data_dir = private_dir(Path(data_dir))
    if emulator_state_dir is None:
        # The emulator's state (the team's .p8, its signing keys) lives inside, private too.
        private_dir(data_dir / "emulator")
    holder: dict[str, Any] = {}

    async def combined(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    transport = httpx.ASGITransport(app=combined)
    public_url = public_url.rstrip("/")
    emulator_app = create_emulator_app(
        state_dir=emulator_state_dir or data_dir / "emulator",
        notification_transport=transport,
        notification_retry_delays=(0.2, 1.0),
        base_url=public_url + APPLE_PREFIX,
        control_api=control_api,
    )
    emulator = emulator_app.state.emulator
    relay, overrides = _relay_server(emulator_app, overrides, relay_smtp)
    team = emulator.default_team
    settings = _sandbox_settings(data_dir, public_url, team, overrides, environ or {})
    register_with_emulator(emulator, settings)
    emulator.set_notification_url(settings.notification_url)
    if relay is not None:
        _announce_relay(emulator_app, relay, settings, public_url + APPLE_PREFIX)

    def on_apple_settings_changed(new: Settings) -> None:
        # An admin changed the redirect URI or a client id in the panel: do what the operator
        # of a real deployment does in Apple's developer portal, so the next sign-in works.
        register_with_emulator(emulator, new)

    service_app = create_app(
        settings,
        apple_transport=transport,
        outbound_transport=outbound_transport,
        on_apple_settings_changed=on_apple_settings_changed,
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(emulator_app.router.lifespan_context(emulator_app))
            stack.enter_context(_running(relay))
            await stack.enter_async_context(service_app.router.lifespan_context(service_app))
            yield

    apple = Mount(APPLE_PREFIX, app=RequestIdMiddleware(emulator_app))  # ids, as the service
    app = Starlette(routes=[apple, Mount("/", app=service_app)], lifespan=lifespan)
    holder["app"] = app
    return Sandbox(
        app=app,
        service_app=service_app,
        emulator_app=emulator_app,
        settings=settings,
        transport=transport,
    )


def _sandbox_settings(
    data_dir: Path,
    public_url: str,
    team: Any,
    overrides: Mapping[str, Any] | None,
    environ: Mapping[str, str],
) -> Settings:
    """The service's settings in sandbox mode: the variables in ``environ`` for what the sandbox
    does not decide itself, the emulator's default team as Apple's credentials, then
    ``overrides``."""
    sandbox_sets = {ENV_PREFIX + name.upper() for name in (*DEPLOYMENT_SETTINGS, "mode")}
    return load_settings(
        data_dir=data_dir,
        environ={k: v for k, v in environ.items() if k not in sandbox_sets},
        overrides={
            "mode": "sandbox",
            "public_url": public_url,
            "apple_base_url": public_url + APPLE_PREFIX,
            "team_id": team.team_id,
            "key_id": team.key_id,
            "private_key": Secret(team.private_key_pem),
            "client_id": team.services_id,
            "app_ids": (team.app_id,),
            **(overrides or {}),
        },
    )


def _relay_server(
    emulator_app: Any, overrides: Mapping[str, Any] | None, wanted: bool
) -> tuple[Any, Mapping[str, Any] | None]:
    """The emulator's relay SMTP server on a free loopback port (not started yet) and the
    settings that send relay mail there; no server when a test builds the app in production
    mode (the relay serves the sandbox only)."""
    from appleconnect.emulator.smtp import RelayServer

    if not wanted or (overrides or {}).get("mode", "sandbox") != "sandbox":
        return None, overrides
    relay = RelayServer(emulator_app.state.relay)
    where = {"relay_smtp_host": relay.host, "relay_smtp_port": relay.port}
    return relay, {**where, **(overrides or {})}


@contextmanager
def _running(relay: Any) -> Iterator[None]:
    """The relay's SMTP server listening for the duration (nothing when there is none)."""
    if relay is None:
        yield
        return
    relay.start()
    try:
        yield
    finally:
        relay.stop()


def _announce_relay(emulator_app: Any, relay: Any, settings: Settings, base_url: str) -> None:
    """Register the service's sending domain and name the relay in credentials.json."""
    register_email_sources(emulator_app.state.relay, settings)
    emulator_app.state.smtp_address = (relay.host, relay.port)
    emulator = emulator_app.state.emulator
    emulator.smtp_address = (relay.host, relay.port)
    emulator.write_credentials(base_url=base_url)


def register_email_sources(relay: Any, settings: Settings) -> None:
    """Register the service's sending domain (the domain of ``mail_from``) as an email source of
    its team at the emulator's relay, as the operator does in Apple's developer portal."""
    from appleconnect.emulator._errors import ControlError
    from appleconnect.emulator.email_sources import EmailSource, checked_domain

    for source in required_sources(settings):
        if source.kind != "domain":
            continue
        try:
            relay.sources.add(
                EmailSource(team_id=settings.team_id, domain=checked_domain(source.value))
            )
        except ControlError as exc:
            log.warning("the sandbox could not register %s at the relay: %s", source.value, exc)


def register_with_emulator(emulator: Any, settings: Settings) -> None:
    """Make the emulator know the service's client ids (the Services ID as a web client, the
    App IDs as native ones, in the settings' team) and its redirect URIs."""
    if not settings.team_id:
        return  # nothing to register before the Apple settings are set
    try:
        emulator.get_team(settings.team_id)
    except ValueError:
        log.warning(
            "the emulator has no team %r: its client ids are not registered", settings.team_id
        )
        return
    clients = ((settings.client_id, "web"), *((app_id, "native") for app_id in settings.app_ids))
    for client_id, kind in clients:
        if client_id and emulator.get_client(client_id) is None:
            emulator.create_client(client_id=client_id, team_id=settings.team_id, kind=kind)
    if settings.client_id:
        for uri in (settings.effective_redirect_uri, *settings.app_redirect_uris):
            emulator.register_redirect_uri(settings.client_id, uri)


@dataclass(frozen=True)
class Prepared:
    """What ``serve`` prints: the admin login link, the demo API key (sandbox mode) and the
    Apple settings still missing once the admin panel's stored ones are applied."""

    login: str
    demo_key: str
    apple_missing: tuple[str, ...]


async def _prepare_db(settings: Settings, known_key: str) -> Prepared:
    """Migrate, make a one-time admin login link, and in sandbox mode a demo API key (the
    known one while it is still valid)."""
    engine = create_engine(settings)
    reads = Reads(engine, autocommit=not settings.database_pgbouncer)
    try:
        await migrate(engine)
        sessions = session_factory(engine)
        known = known_key and await store.check_api_key(
            reads=reads, sessions=sessions, raw=known_key
        )
        async with sessions() as db:
            login = await store.create_admin_login(db=db, ttl=settings.admin_login_ttl)
            demo_key = ""
            if settings.sandbox:
                demo_key = known_key
                if not known:
                    demo_key = await store.create_api_key(db=db, name="sandbox demo")
            try:
                effective = await stored_settings(
                    db=db, encryptor=load_encryptor(settings), base=settings
                )
            except SettingsError as exc:
                # The service logs this too and keeps the start settings; so does the banner.
                log.error("the settings stored by the admin panel are not applied: %s", exc)
                effective = settings
            await db.commit()
    finally:
        await reads.dispose()
        await engine.dispose()
    return Prepared(admin_login_url(settings, login), demo_key, effective.apple_missing())


def _prepare(settings: Settings) -> Prepared:
    data_dir = private_dir(Path(settings.data_dir))
    if settings.sandbox:
        # `admin login-link` prints its link where this server listens, not at the default port.
        _write_private(data_dir / SERVED_URL_FILE, settings.public_url)
    key_file = data_dir / DEMO_KEY_FILE
    known = key_file.read_text().strip() if key_file.exists() else ""
    prepared = asyncio.run(_prepare_db(settings, known))
    if prepared.demo_key and prepared.demo_key != known:
        _write_private(key_file, prepared.demo_key)
    if key_file.exists():
        private_file(key_file)  # narrows a file an older version left readable
    return prepared


def _write_private(path: Path, line: str) -> None:
    """Write one line to a file readable by its owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(line + "\n")


def production_banner(
    settings: Settings, prepared: Prepared, choice: ModeChoice | None = None
) -> list[str]:
    """The lines ``serve`` prints outside sandbox mode; the first says what chose the mode."""
    mode = f"{choice.mode} mode, {choice.reason}" if choice else f"{settings.mode} mode"
    lines = [
        f"Apple Connect ({mode}) on {settings.public_url}",
        f"  admin login      {prepared.login}  (one-time link)",
    ]
    if prepared.demo_key:
        lines.append(f"  demo API key     {prepared.demo_key}")
    if prepared.apple_missing:
        lines += [
            f"  NOT CONFIGURED   missing Apple settings: {', '.join(prepared.apple_missing)}",
            "                   /api/* and /auth/apple/* answer 503 not_configured until they "
            "are set: open the admin login link, then Apple settings "
            f"({settings.public_url.rstrip('/')}/admin/apple).",
        ]
    return lines


def sandbox_banner(
    public_url: str,
    prepared: Prepared,
    data_dir: Path,
    *,
    control_api: bool,
    smtp: tuple[str, int] | None = None,
) -> list[str]:
    """The lines ``serve`` prints in sandbox mode; they say what chose the mode and whether the
    control API is on."""
    control = (
        f"control API: {public_url}{APPLE_PREFIX}/emulator/"
        if control_api
        else "control API: off, --control-api turns it on"
    )
    return [
        "Apple Connect — sandbox mode (the emulator plays Apple; no Apple account needed)",
        f"  mode             sandbox ({ModeChoice('sandbox').reason}: no --config, "
        "no APPLECONNECT_MODE, no deployment variable)",
        f"  demo page        {public_url}/",
        f"  REST API         {public_url}/api/  (OpenAPI: {public_url}/openapi.json)",
        f"  emulated Apple   {public_url}{APPLE_PREFIX}/  ({control})",
        f"  admin login      {prepared.login}  (one-time link)",
        f"  demo API key     {prepared.demo_key}",
        f"  data directory   {Path(data_dir).resolve()}",
        *(
            [f"  email relay SMTP {smtp[0]}:{smtp[1]}  (Apple's Private Email Relay, emulated)"]
            if smtp
            else []
        ),
    ]


WORKERS_NEED_PRODUCTION = (
    "--workers needs production mode or an external emulator (a --config file or "
    "APPLECONNECT_* settings, apple_base_url pointing at `appleconnect emulator`): sandbox "
    "mode keeps the emulator's state in the memory of one process."
)

NO_RATE_LIMITS = {"rate_limit_per_ip": 0, "rate_limit_per_key": 0}
"""The sandbox's settings under ``serve --no-rate-limits``."""


@dataclass(frozen=True)
class Composed:
    """What ``serve`` runs: the ASGI app and the banner it prints first.

    The app is built when first asked for (:attr:`app`): ``serve --workers N`` never asks in
    the parent, whose workers build their own (:mod:`appleconnect.workers`).
    """

    make_app: Callable[[], Any]
    banner: list[str]
    sandbox: bool
    log_format: LogFormat = "text"
    workers: int = 1

    @functools.cached_property
    def app(self) -> Any:
        return self.make_app()


def compose(
    *,
    host: str,
    port: int,
    data_dir: Path,
    config: Path | None,
    control_api: bool | None = None,
    environ: Mapping[str, str] | None = None,
    rate_limits: bool = True,
) -> Composed:
    """Build what ``appleconnect serve`` runs, without listening on anything.

    The mode follows :func:`appleconnect.server.settings.choose_mode`; chosen by default (no
    configuration) it is the sandbox, with the emulator mounted. An explicit sandbox mode
    (``APPLECONNECT_MODE=sandbox``, ``mode = "sandbox"`` in the file) runs the service alone with
    the configuration given, like production, against the Apple it names (an emulator run on its
    own). In the sandbox the emulator's control API follows the emulator's rule
    (:func:`appleconnect.emulator.control_api_enabled`): ``control_api=None`` serves it only when
    ``host`` is a loopback address. ``rate_limits=False`` turns the sandbox's rate limits off (for
    fuzzing and load tests).
    """
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    public_url = f"http://{shown_host}:{port}"
    environ = os.environ if environ is None else environ
    choice = ModeChoice("production")
    try:
        choice = choose_mode(config=config, environ=environ)
        if choice == ModeChoice("sandbox"):
            return _compose_sandbox(
                host, public_url, Path(data_dir), control_api, environ, rate_limits
            )
        if control_api:
            raise click.UsageError("--control-api applies to sandbox mode only.")
        if not rate_limits:
            raise click.UsageError(
                "--no-rate-limits applies to sandbox mode only; in production set "
                "rate_limit_per_ip and rate_limit_per_key to 0."
            )
        settings = load_settings(data_dir=Path(data_dir), config=config, environ=environ)
        settings.validate(apple=False)  # what create_app checks, refused here in one line
        banner = production_banner(settings, _prepare(settings), choice)
        return Composed(
            functools.partial(create_app, settings),
            banner,
            sandbox=False,
            log_format=settings.log_format,
            workers=settings.workers,
        )
    except SettingsError as exc:
        raise CommandError(f"configuration error: {exc}{choice.note()}") from exc


def _compose_sandbox(
    host: str,
    public_url: str,
    data_dir: Path,
    control_api: bool | None,
    environ: Mapping[str, str],
    rate_limits: bool,
) -> Composed:
    """Sandbox mode, chosen by default: the service with the emulator mounted, and the settings
    given by variables (none of :data:`DEPLOYMENT_SETTINGS`, or the mode would be production)."""
    from appleconnect.emulator import control_api_enabled

    enabled = control_api_enabled(host, control_api)
    sandbox = build_sandbox_app(
        data_dir,
        public_url=public_url,
        control_api=enabled,
        overrides=None if rate_limits else NO_RATE_LIMITS,
        environ=environ,
    )
    prepared = _prepare(sandbox.settings)
    smtp = (sandbox.settings.relay_smtp_host, sandbox.settings.relay_smtp_port)
    banner = sandbox_banner(public_url, prepared, data_dir, control_api=enabled, smtp=smtp)
    return Composed(
        lambda: sandbox.app, banner, sandbox=True, log_format=sandbox.settings.log_format
    )


def _default_sandbox(config: Path | None) -> bool:
    """Whether ``serve`` would run the default sandbox (the emulator in the process)."""
    try:
        return choose_mode(config=config) == ModeChoice("sandbox")
    except SettingsError:
        return False  # compose reports it, naming what chose the mode


def serve(
    *,
    host: str,
    port: int,
    data_dir: Path,
    config: Path | None,
    control_api: bool | None = None,
    limits: ServerLimits | None = None,
    rate_limits: bool = True,
    log_format_given: bool = False,
    workers: int | None = None,
) -> None:
    """Run ``appleconnect serve``: sandbox mode without configuration, production with it.

    A port in use is refused in one line before anything is printed or written.
    ``limits`` are the slow-client timeouts and the connection cap (:mod:`appleconnect._serving`).
    ``workers`` (else the ``workers`` setting) above 1 runs that many processes on the port
    (:mod:`appleconnect.workers`); the in-process emulator of sandbox mode allows one.
    """
    problem = listen_problem(host, port)
    if problem:  # before the banner and its one-time admin login link
        raise CommandError(problem)
    install_log_redaction()
    if (workers or 1) > 1 and _default_sandbox(config):
        raise CommandError(WORKERS_NEED_PRODUCTION)
    composed = compose(
        host=host,
        port=port,
        data_dir=data_dir,
        config=config,
        control_api=control_api,
        rate_limits=rate_limits,
    )
    click.echo("\n".join(composed.banner))
    limits = limits or ServerLimits()
    if not log_format_given:
        limits = dataclasses.replace(limits, log_format=composed.log_format)
    count = workers or composed.workers
    if count > 1:
        from appleconnect.workers import WorkerSpec, serve_workers

        spec = WorkerSpec(data_dir=Path(data_dir), config=config, limits=limits)
        raise SystemExit(serve_workers(spec, host=host, port=port, count=count))
    options = limits.uvicorn_options()
    run_server(composed.app, host=host, port=port, log_level="info", proxy_headers=True, **options)
