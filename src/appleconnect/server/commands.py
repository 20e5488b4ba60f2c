"""The service's ``appleconnect`` sub-commands. ``cli.py`` adds each of :data:`COMMANDS`.

Every command takes the same ``--data-dir`` / ``--config`` as ``serve``, so it works beside a
running server on the same data. Every command but ``migrate`` reads data that ``serve`` (or
``migrate``) made: a data directory without a database, or a database without the service's
tables, is refused in one line, and nothing is created (:func:`_require_data`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from . import store
from .container import close_container, open_container
from .db import DbSession, create_engine, current_revision, migrate, session_factory
from .live_settings import stored_settings
from .security import load_encryptor
from .settings import Settings, SettingsError, choose_mode, load_settings
from .signin import delete_account
from .transfer import export_transfer_subs, import_transfer_subs
from .users import user_json

__all__ = ["COMMANDS", "DEFAULT_DATA_DIR", "SERVED_URL_FILE"]

DEFAULT_DATA_DIR = Path("appleconnect-data")
SERVED_URL_FILE = "served-url.txt"
"""In a sandbox's data directory: the URL ``serve`` listens on, for ``admin login-link``."""
F = TypeVar("F", bound=Callable[..., Any])


def data_options(func: F) -> F:
    """``--data-dir`` and ``--config``, exactly as ``serve`` takes them."""
    func = click.option(
        "--config",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="TOML configuration file (default: sandbox mode, or APPLECONNECT_* variables).",
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_DATA_DIR,
        show_default=True,
        help="Where the SQLite database and sandbox files live.",
    )(func)
    return func


class CommandError(click.ClickException):
    """A command's refusal, printed as one line in the form every ``appleconnect`` command uses
    (``appleconnect: …`` on standard error, exit status 1), not click's ``Error: …``."""

    def show(self, file: Any = None) -> None:
        click.echo(f"appleconnect: {self.format_message()}", err=True, file=file)


def _example(*lines: str) -> str:
    """A command's epilog: its examples, kept as written (``\b`` stops click's rewrapping)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


def _settings(data_dir: Path, config: Path | None, *, existing: bool = True) -> Settings:
    """The settings, validated; an error names the setting and what chose the mode. With
    ``existing`` (every command but ``migrate``) a missing data directory or database is
    refused before anything is created."""
    choice = None
    try:
        choice = choose_mode(config=config)
        settings = load_settings(data_dir=data_dir, config=config)
        settings.validate(apple=False)
    except SettingsError as exc:
        raise CommandError(f"{exc}{choice.note() if choice else ''}") from exc
    if existing:
        _require_data_dir(settings, data_dir)
    return settings


def _require_data_dir(settings: Settings, data_dir: Path) -> None:
    """Refuse a SQLite database that is not there, naming the directory (or the file of an
    explicit ``database_url``) and what to do, instead of creating an empty one."""
    url = make_url(settings.effective_database_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return
    if settings.database_url:
        if not Path(str(url.database)).is_file():
            raise CommandError(
                f"no service data in {url.database} (no such database file); check "
                "database_url, or run `appleconnect migrate` or `appleconnect serve` first"
            )
        return
    if not data_dir.is_dir():
        why = "no such directory"
    elif not (data_dir / "appleconnect.db").is_file():
        why = "no database there"
    else:
        return
    raise CommandError(
        f"no service data in {data_dir} ({why}); pass --data-dir or run `appleconnect serve` first"
    )


async def _require_data(settings: Settings, engine: AsyncEngine) -> None:
    """Refuse a database without the service's tables (an empty file, a new PostgreSQL
    database): the command would otherwise create them and read nothing."""
    if await current_revision(engine) is None:
        where = make_url(settings.effective_database_url).render_as_string(hide_password=True)
        raise CommandError(
            f"no service data in {where} (no tables of the service there); pass --data-dir or "
            "--config, or run `appleconnect migrate` or `appleconnect serve` first"
        )


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(coro)
    except SettingsError as exc:
        raise CommandError(str(exc)) from exc


def async_command(func: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        _run(func(*args, **kwargs))

    return wrapper


async def _effective_settings(settings: Settings) -> Settings:
    """``settings`` with what the admin panel stored on top: the Apple credentials of a
    deployment configured in the panel live in the database, not in its configuration."""
    engine = create_engine(settings)
    try:
        await _require_data(settings, engine)
        await migrate(engine)
        async with session_factory(engine)() as db:
            return await stored_settings(db=db, encryptor=load_encryptor(settings), base=settings)
    finally:
        await engine.dispose()


async def _with_db(settings: Settings, body: Callable[[DbSession], Any]) -> Any:
    """``body`` run in one transaction on the service's existing database (migrated first,
    as ``serve`` does)."""
    engine = create_engine(settings)
    try:
        await _require_data(settings, engine)
        await migrate(engine)
        async with session_factory(engine)() as db:
            result = await body(db)
            await db.commit()
            return result
    finally:
        await engine.dispose()


@click.command(
    "migrate",
    epilog=_example(
        "appleconnect migrate --config appleconnect.toml",
        "appleconnect migrate --data-dir ./appleconnect-data",
    ),
)
@data_options
@async_command
async def migrate_command(data_dir: Path, config: Path | None) -> None:
    """Apply the database migrations (serve also applies them at start); creates the
    database when there is none."""
    settings = _settings(data_dir, config, existing=False)
    engine = create_engine(settings)
    try:
        await migrate(engine)
        click.echo(f"database at revision {await current_revision(engine)}")
    finally:
        await engine.dispose()


@click.group(
    "apikey",
    epilog=_example("appleconnect apikey create --name ios-app", "appleconnect apikey list"),
)
def apikey() -> None:
    """Create, list and revoke API keys for the REST API."""


@apikey.command(
    "create", epilog=_example("appleconnect apikey create --name ios-app --data-dir ./data")
)
@click.option("--name", default="default", show_default=True, help="A label for the key.")
@data_options
@async_command
async def apikey_create(name: str, data_dir: Path, config: Path | None) -> None:
    """Create an API key and print it (it is shown only this once)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise click.BadParameter("give a name of 1 to 100 characters", param_hint="--name")
    settings = _settings(data_dir, config)
    raw = await _with_db(settings, lambda db: store.create_api_key(db=db, name=name, actor="cli"))
    click.echo(raw)


@apikey.command("list", epilog=_example("appleconnect apikey list --data-dir ./data"))
@data_options
@async_command
async def apikey_list(data_dir: Path, config: Path | None) -> None:
    """List API keys (names and prefixes; the keys themselves are not stored)."""
    settings = _settings(data_dir, config)
    keys = await _with_db(settings, lambda db: store.list_api_keys(db=db))
    for key in keys:
        status = "revoked" if key.revoked_at else "active"
        used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
        click.echo(
            f"{key.id}\t{key.name}\t{key.prefix}…\t{status}\t"
            f"created {key.created_at.isoformat(timespec='seconds')}\tlast used {used}"
        )


@apikey.command("revoke", epilog=_example("appleconnect apikey revoke 3"))
@click.argument("key_id", type=int)
@data_options
@async_command
async def apikey_revoke(key_id: int, data_dir: Path, config: Path | None) -> None:
    """Revoke the API key with id KEY_ID (see `apikey list`)."""
    settings = _settings(data_dir, config)
    done = await _with_db(
        settings, lambda db: store.revoke_api_key(db=db, key_id=key_id, actor="cli")
    )
    if not done:
        raise CommandError(f"no active API key has id {key_id}")
    click.echo(f"revoked API key {key_id}")


@click.group(
    "users",
    epilog=_example("appleconnect users list --limit 20", "appleconnect users show a@example.com"),
)
def users() -> None:
    """List, show, delete and migrate users."""


@users.command("list", epilog=_example("appleconnect users list --limit 20 --data-dir ./data"))
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="At most this many users, the oldest first (1 to 10000).",
)
@data_options
@async_command
async def users_list(limit: int, data_dir: Path, config: Path | None) -> None:
    """List users, one per line."""
    settings = _settings(data_dir, config)
    rows = await _with_db(settings, lambda db: store.list_users(db=db, limit=limit))
    for user in rows:
        click.echo(f"{user.id}\t{user.sub}\t{user.email or '-'}\t{user.role}")


@users.command(
    "show",
    epilog=_example("appleconnect users show a@example.com", "appleconnect users show 001234.abc"),
)
@click.argument("ref")
@data_options
@async_command
async def users_show(ref: str, data_dir: Path, config: Path | None) -> None:
    """Show one user (REF: id, Apple sub, transfer_sub or email) as JSON."""
    settings = _settings(data_dir, config)
    user = await _with_db(settings, lambda db: store.find_user(db=db, ref=ref))
    if user is None:
        raise CommandError(f"no user matches {ref!r}")
    click.echo(json.dumps(user_json(user, transfer_sub=True), indent=2))


@users.command("delete", epilog=_example("appleconnect users delete a@example.com --yes"))
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@data_options
@async_command
async def users_delete(ref: str, yes: bool, data_dir: Path, config: Path | None) -> None:
    """Revoke the user's Apple tokens and delete their data."""
    settings = _settings(data_dir, config)
    user = await _with_db(settings, lambda db: store.find_user(db=db, ref=ref))
    if user is None:
        raise CommandError(f"no user matches {ref!r}")
    if not yes:
        click.confirm(f"Delete user {user.id} ({user.email or user.sub})?", abort=True)
    settings = await _effective_settings(settings)
    if settings.apple_missing():
        # Without Apple credentials (sandbox data read by the CLI) nothing can be revoked.
        async def delete_only(db: DbSession) -> None:
            await store.delete_user_data(db=db, user=user)
            await store.audit(
                db=db,
                event="user.deleted",
                actor="cli",
                sub=user.sub,
                detail={"revoked": [], "note": "no Apple credentials configured"},
            )

        await _with_db(settings, delete_only)
        click.echo(f"deleted user {user.id}; tokens NOT revoked at Apple (no credentials)")
        return
    service = await open_container(settings)
    try:
        report = await delete_account(service=service, user_id=user.id, actor="cli")
    finally:
        await close_container(service)
    click.echo(
        f"deleted user {user.id}; revoked at Apple for {report.revoked or 'nothing'}"
        + (f"; revocation FAILED for {report.revoke_failed}" if report.revoke_failed else "")
    )


@users.command(
    "migrate",
    epilog=_example(
        "appleconnect users migrate export --target-team-id TEAMB12345 --config old-team.toml",
        "appleconnect users migrate import --config new-team.toml",
    ),
)
@click.argument("direction", type=click.Choice(["export", "import"]))
@click.option("--target-team-id", default=None, help="export: the recipient team's Team ID.")
@data_options
@async_command
async def users_migrate(
    direction: str, target_team_id: str | None, data_dir: Path, config: Path | None
) -> None:
    """App transfer: `export` stores each user's transfer_sub for the recipient team (run by
    the sending team); `import` swaps each transfer_sub for the new team's sub (run by the
    recipient team, within Apple's 60-day window)."""
    if direction == "export" and not target_team_id:
        raise click.BadParameter("export needs --target-team-id", param_hint="--target-team-id")
    settings = await _effective_settings(_settings(data_dir, config))
    settings.validate()
    service = await open_container(settings)
    try:
        if direction == "export":
            assert target_team_id is not None
            report = await export_transfer_subs(service=service, target_team_id=target_team_id)
        else:
            report = await import_transfer_subs(service=service)
    finally:
        await close_container(service)
    for user_id, reason in report.failed.items():
        click.echo(f"user {user_id}: {reason}", err=True)
    click.echo(
        f"{direction}: {report.done} users migrated, {report.unchanged} unchanged, "
        f"{len(report.failed)} failed"
    )
    if report.failed:
        raise click.exceptions.Exit(1)


@click.group("admin", epilog=_example("appleconnect admin login-link --data-dir ./data"))
def admin() -> None:
    """Administration helpers."""


@admin.command(
    "login-link",
    epilog=_example(
        "appleconnect admin login-link",
        "appleconnect admin login-link --config appleconnect.toml",
    ),
)
@data_options
@async_command
async def admin_login_link(data_dir: Path, config: Path | None) -> None:
    """Print a one-time link that signs in to the admin panel (of the server on this data:
    in sandbox mode, at the address that `serve` last listened on)."""
    settings = _settings(data_dir, config)
    raw = await _with_db(
        settings, lambda db: store.create_admin_login(db=db, ttl=settings.admin_login_ttl)
    )
    click.echo(admin_login_url(settings, raw))


def admin_login_url(settings: Settings, raw: str) -> str:
    """The admin login link at ``public_url``; in sandbox mode at the URL that the sandbox
    ``serve`` wrote in the data directory (it listens where ``--host``/``--port`` say)."""
    base = settings.public_url
    served = Path(settings.data_dir) / SERVED_URL_FILE
    if settings.sandbox and served.is_file():
        base = served.read_text(encoding="utf-8").strip() or base
    return f"{base.rstrip('/')}/admin/login?token={raw}"


COMMANDS: list[click.Command] = [migrate_command, apikey, users, admin]
"""Add each to the ``appleconnect`` group: ``for c in COMMANDS: cli.add_command(c)``."""
