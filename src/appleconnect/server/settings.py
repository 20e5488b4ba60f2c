"""The service's settings: one frozen object, read once at the edge.

Sources, later ones winning: built-in defaults, a TOML file (``--config``), environment variables
``APPLECONNECT_<NAME>``. The composition root (``appleconnect serve`` / ``sandbox.py``) may add
overrides on top. Nothing here reads the environment at import time.

The mode is chosen by one rule (:func:`choose_mode`), and the choice names what made it, so that
``serve`` and every error can say why the service runs in production or sandbox mode.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from appleconnect import APPLE_BASE_URL
from appleconnect.checks import redirect_uri_problem, split_list

__all__ = [
    "DEPLOYMENT_SETTINGS",
    "ENV_PREFIX",
    "ModeChoice",
    "Secret",
    "Settings",
    "SettingsError",
    "choose_mode",
    "load_settings",
]

ENV_PREFIX = "APPLECONNECT_"
MAX_CONFIG_BYTES = 1_000_000
MAX_WORKERS = 64


class SettingsError(ValueError):
    """Raised when the configuration is invalid; the message says which setting and why."""


class Secret:
    """A string whose ``repr`` is masked, so that settings can be logged safely."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


Mode = Literal["sandbox", "production"]
HOST_PREFIX = "__Host-"
"""The cookie-name prefix that makes browsers require Secure, Path=/ and no Domain."""
SmtpSecurity = Literal["none", "starttls", "tls"]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the service. ``docs/service.md`` documents each one.

    The environment variable of a field is ``APPLECONNECT_`` plus its upper-cased name; list
    fields take comma-separated values there.
    """

    mode: Mode = "production"
    data_dir: Path = Path("appleconnect-data")
    database_url: str = ""
    # PostgreSQL reached through PgBouncer in transaction pooling: no cached prepared statements
    # (docs/service.md#pgbouncer).
    database_pgbouncer: bool = False
    public_url: str = "http://127.0.0.1:8000"

    # Apple.
    apple_base_url: str = APPLE_BASE_URL
    team_id: str = ""
    key_id: str = ""
    private_key: Secret = field(default_factory=lambda: Secret(""))
    private_key_file: str = ""
    client_secret: Secret = field(default_factory=lambda: Secret(""))
    client_id: str = ""
    app_ids: tuple[str, ...] = ()
    redirect_uri: str = ""
    app_redirect_uris: tuple[str, ...] = ()
    forward_uris: tuple[str, ...] = ()
    scope: str = "name email"
    leeway_seconds: int = 60
    refresh_validation_interval: int = 86_400
    # Apple's key set (AppleKeys): an unknown kid refetches at most once per interval; after a
    # failed fetch, once per backoff (a sign-in or notification meanwhile answers 503).
    keys_refetch_interval: float = 60.0
    keys_failure_backoff: float = 5.0

    # Secrets at rest.
    encryption_key: Secret = field(default_factory=lambda: Secret(""))

    # Sessions and sign-in requests.
    session_ttl: int = 30 * 86_400
    auth_request_ttl: int = 600
    cookie_name: str = "appleconnect_session"
    admin_login_ttl: int = 900

    # Accounts.
    roles: tuple[str, ...] = ("subscriber", "administrator")
    default_role: str = "subscriber"

    # Mail.
    welcome_email: bool = False
    mail_from: str = ""
    welcome_subject: str = "Welcome"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: SmtpSecurity = "starttls"
    smtp_username: str = ""
    smtp_password: Secret = field(default_factory=lambda: Secret(""))
    smtp_timeout: float = 10.0
    # The outbox's delivery: retries after mail_retry_base seconds, doubling up to
    # mail_retry_max, until mail_max_attempts; a process sending a mail holds it for mail_lease
    # seconds, after which another process may send it (docs/service.md#the-email-outbox).
    mail_retry_base: float = 60.0
    mail_retry_max: float = 21_600.0
    mail_max_attempts: int = 12
    mail_lease: float = 300.0
    # Sandbox mode only: where mail to relay addresses goes, the emulator's Private Email Relay
    # (set by the sandbox; docs/service.md#mail-to-relay-addresses).
    relay_smtp_host: str = ""
    relay_smtp_port: int = 0

    # Limits.
    max_body_bytes: int = 65_536
    # Requests per ``rate_limit_window`` seconds to the REST API and the web sign-in
    # start/callback, counted in the database so that every process shares them; 0 turns a
    # limit off.
    rate_limit_window: int = 60
    rate_limit_per_ip: int = 300
    rate_limit_per_key: int = 3000
    rate_limit_exempt: tuple[str, ...] = ()
    # How often (seconds) a process merges its counts into the shared ones in the database;
    # a bucket past half its limit is written on every request. 0: every request is written
    # (exact across processes, one database write per request). docs/service.md#rate-limits
    rate_limit_sync: float = 1.0

    # Metrics (/metrics): open on loopback; from elsewhere with this bearer token or from these
    # networks.
    metrics_token: Secret = field(default_factory=lambda: Secret(""))
    metrics_allow: tuple[str, ...] = ()
    # Log lines: "text" or "json" (one object per line); serve's --log-format wins.
    log_format: Literal["text", "json"] = "text"
    # Web sign-ins in progress (started, not yet expired or finished) one client address (an
    # IPv6 client: its /64) may hold; each is a row anyone can make. 0 turns the budget off.
    signin_budget_per_ip: int = 30
    # Service processes on the one port; serve's --workers wins
    # (docs/service.md#several-worker-processes).
    workers: int = 1

    @property
    def sandbox(self) -> bool:
        return self.mode == "sandbox"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'appleconnect.db').resolve()}"

    @property
    def effective_redirect_uri(self) -> str:
        return self.redirect_uri or f"{self.public_url.rstrip('/')}/auth/apple/callback"

    @property
    def notification_url(self) -> str:
        return f"{self.public_url.rstrip('/')}/auth/apple/notifications"

    @property
    def audiences(self) -> tuple[str, ...]:
        """Every client id whose tokens this service accepts (the aud allow-list)."""
        return tuple(dict.fromkeys(c for c in (self.client_id, *self.app_ids) if c))

    @property
    def cookie_secure(self) -> bool:
        return not self.sandbox

    @property
    def session_cookie(self) -> str:
        """The session cookie's name: ``cookie_name``, with the ``__Host-`` prefix in production,
        where the cookie is Secure, on ``/`` and without a Domain, so that no other host (a
        sibling subdomain included) can set or overwrite it."""
        if self.cookie_secure and not self.cookie_name.startswith(HOST_PREFIX):
            return HOST_PREFIX + self.cookie_name
        return self.cookie_name

    def private_key_pem(self) -> str:
        """The .p8 key: the setting itself, or the file it names."""
        if self.private_key:
            return self.private_key.get()
        if self.private_key_file:
            path = Path(self.private_key_file)
            try:
                return path.read_text(encoding="utf-8")
            except OSError as exc:
                raise SettingsError(
                    f"private_key_file: cannot read {path}: {exc.strerror}."
                ) from exc
        return ""

    def apple_missing(self, *, private_key_pem: str | None = None) -> tuple[str, ...]:
        """The Apple settings still unset, in the order an operator fills them in; empty when
        sign-in can work. ``private_key_pem`` stands for the key when it comes from elsewhere
        (the admin panel's stored copy); by default :meth:`private_key_pem` is read."""
        missing = [] if self.client_id else ["client_id"]
        if not self.client_secret:
            missing += [name for name in ("team_id", "key_id") if not getattr(self, name)]
            pem = self.private_key_pem() if private_key_pem is None else private_key_pem
            if not pem:
                missing.append("private_key")
        return tuple(missing)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def _check_mail(self) -> None:
        for name in ("smtp_timeout", "mail_retry_base", "mail_retry_max", "mail_max_attempts"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name}: must be a positive number.")
        if self.mail_lease < 2 * self.smtp_timeout:
            raise SettingsError(
                "mail_lease: must be at least twice smtp_timeout, so that a mail is not sent "
                "by another process while this one is still sending it."
            )

    def _check_scale_out(self) -> None:
        if not 1 <= self.workers <= MAX_WORKERS:
            raise SettingsError(f"workers: must be 1 to {MAX_WORKERS} processes.")
        if self.database_pgbouncer and not self.effective_database_url.startswith("postgresql"):
            raise SettingsError(
                "database_pgbouncer: applies to a PostgreSQL database_url only "
                "(postgresql+asyncpg://…)."
            )

    def validate(self, *, apple: bool = True) -> None:
        """Raise :class:`SettingsError` naming the first setting that is wrong.

        ``apple=False`` lets the Apple credentials be missing: for commands that only touch the
        database, and for a service that gets them from the admin panel (until then it answers
        ``not_configured``; see :meth:`apple_missing`). Everything that is set is still checked,
        and production mode still refuses the sandbox-only relaxations.
        """
        self._validate_accounts_and_mail()
        self._validate_limits()
        if apple:
            self._validate_apple()
        url = urlsplit(self.public_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SettingsError("public_url: must be an absolute http(s) URL.")
        apple_url = urlsplit(self.apple_base_url)
        if apple_url.scheme not in ("http", "https") or not apple_url.hostname:
            raise SettingsError("apple_base_url: must be an absolute http(s) URL.")
        if self.client_id and any(c == "," or c.isspace() for c in self.client_id):
            raise SettingsError(
                f"client_id: {self.client_id!r} is not one Services ID; put the App IDs in "
                'app_ids (APPLECONNECT_APP_IDS=a,b or app_ids = ["a", "b"]).'
            )
        if self.welcome_email and not self.mail_from:
            raise SettingsError("mail_from: required when welcome_email is on.")
        if not self.sandbox:
            self._validate_production()

    def _validate_accounts_and_mail(self) -> None:
        if self.mode not in ("sandbox", "production"):
            raise SettingsError("mode: must be 'sandbox' or 'production'.")
        if not self.roles:
            raise SettingsError("roles: give at least one role.")
        if self.default_role not in self.roles:
            raise SettingsError(
                f"default_role: {self.default_role!r} is not one of roles {list(self.roles)}."
            )
        if self.log_format not in ("text", "json"):
            raise SettingsError("log_format: must be 'text' or 'json'.")
        if self.smtp_security not in ("none", "starttls", "tls"):
            raise SettingsError("smtp_security: must be 'none', 'starttls' or 'tls'.")

    def _validate_limits(self) -> None:
        """Lifetimes, sizes, Apple's key refetching and the rate limits."""
        for name in ("session_ttl", "auth_request_ttl", "admin_login_ttl", "max_body_bytes"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name}: must be a positive number.")
        if not 0 <= self.keys_refetch_interval <= 3600:
            raise SettingsError("keys_refetch_interval: must be 0 to 3600 seconds.")
        if not 0 <= self.keys_failure_backoff <= 600:
            raise SettingsError("keys_failure_backoff: must be 0 to 600 seconds.")
        self._check_mail()
        self._check_scale_out()
        if not 1 <= self.rate_limit_window <= 86_400:
            raise SettingsError("rate_limit_window: must be 1 to 86400 seconds.")
        if not 0 <= self.rate_limit_sync <= 60:
            raise SettingsError("rate_limit_sync: must be 0 to 60 seconds.")
        for name in ("rate_limit_per_ip", "rate_limit_per_key", "signin_budget_per_ip"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name}: must be 0 (no limit) or a positive number.")
        for name in ("rate_limit_exempt", "metrics_allow"):
            for network in getattr(self, name):
                try:
                    ipaddress.ip_network(network, strict=False)
                except ValueError:
                    raise SettingsError(
                        f"{name}: {network!r} is not an IP address or network."
                    ) from None

    def _validate_apple(self) -> None:
        """The Apple credentials are complete (not asked when the panel may supply them)."""
        if not self.client_id:
            raise SettingsError("client_id: set the Services ID used for web sign-in.")
        if not (self.client_secret or (self.team_id and self.key_id)):
            raise SettingsError(
                "team_id/key_id/private_key: set them so the client secret is minted, "
                "or set client_secret to a secret made by hand."
            )
        if self.team_id and not self.client_secret and not self.private_key_pem():
            raise SettingsError("private_key: set the .p8 key or private_key_file.")

    def _validate_production(self) -> None:
        """Refuse the relaxations that only sandbox mode may have."""
        if self.relay_smtp_host:
            raise SettingsError("relay_smtp_host: only sandbox mode sends to the emulator's relay.")
        if not self.encryption_key:
            raise SettingsError(
                "encryption_key: production mode needs a key to encrypt secrets at rest; "
                "generate one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`."
            )
        if urlsplit(self.public_url).scheme != "https":
            raise SettingsError("public_url: production mode requires https.")
        if urlsplit(self.apple_base_url).scheme != "https":
            # Over plain HTTP the client secret, the codes and Apple's keys travel in clear, and
            # whoever sits on the path can serve a key set and forge identity tokens.
            raise SettingsError(
                f"apple_base_url: production mode requires https ({self.apple_base_url!r} would "
                "send the client secret and codes in clear and let the path forge Apple's keys)."
            )
        for name, uris in (
            ("redirect_uri", (self.effective_redirect_uri,)),
            ("app_redirect_uris", self.app_redirect_uris),
        ):
            for uri in uris:
                problem = redirect_uri_problem(uri)
                if problem:
                    raise SettingsError(f"{name}: {uri!r} would be refused by Apple: {problem}.")
        for uri in self.forward_uris:
            if urlsplit(uri).scheme != "https":
                raise SettingsError(f"forward_uris: {uri!r} must use https in production mode.")
        if self.smtp_host and self.smtp_security == "none":
            raise SettingsError("smtp_security: production mode refuses unencrypted SMTP.")


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce_strings(name: str, value: object) -> tuple[str, ...]:
    """A list of strings, or one string of comma-separated values, in the one list syntax
    (:mod:`appleconnect._lists`): every element checked, none empty, none with a space inside."""
    if not isinstance(value, str | list):
        raise TypeError
    try:
        return split_list(value, what=name, variable=ENV_PREFIX + name.upper(), toml_key=name)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _coerce_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise TypeError


def _coerce(name: str, value: object) -> Any:
    """Turn a TOML or environment value into the field's type, or raise SettingsError."""
    default = Settings.__dataclass_fields__[name].default
    kind = _FIELDS[name].type
    try:
        if name in ("private_key", "client_secret", "encryption_key", "smtp_password"):
            if not isinstance(value, str):
                raise TypeError
            return Secret(value)
        if name == "data_dir":
            if not isinstance(value, str | Path):
                raise TypeError
            return Path(value)
        if kind == "tuple[str, ...]":
            return _coerce_strings(name, value)
        if isinstance(default, bool):
            return _coerce_bool(value)
        if isinstance(default, int):
            if isinstance(value, bool):
                raise TypeError
            return int(value)  # type: ignore[call-overload]
        if isinstance(default, float):
            return float(value)  # type: ignore[arg-type]
        if not isinstance(value, str):
            raise TypeError
        return value
    except SettingsError:
        raise
    except (TypeError, ValueError):
        raise SettingsError(f"{name}: {value!r} is not a valid value ({kind}).") from None


DEPLOYMENT_SETTINGS = frozenset(
    {
        "public_url",
        "database_url",
        "encryption_key",
        "apple_base_url",
        "team_id",
        "key_id",
        "private_key",
        "private_key_file",
        "client_secret",
        "client_id",
        "app_ids",
        "redirect_uri",
        "relay_smtp_host",
        "relay_smtp_port",
    }
)
"""The settings that sandbox mode decides itself (where it is, its database and key, and Apple,
which the emulator plays). A variable for one of them, without ``APPLECONNECT_MODE``, configures
a deployment: it chooses production mode. Every other variable applies in either mode."""


RENAMED_VARIABLES = {
    "APPLECONNECT_KEY_FILE": "APPLECONNECT_PRIVATE_KEY_FILE",
    "APPLECONNECT_CLIENT_IDS": "APPLECONNECT_CLIENT_ID (the Services ID) and APPLECONNECT_APP_IDS",
}
"""Variables that older versions of ``appleconnect secret`` and ``doctor`` read, and the settings
that replace them (the command line refuses them with the same words)."""


@dataclass(frozen=True)
class ModeChoice:
    """The mode and what chose it: ``APPLECONNECT_MODE``, ``mode in x.toml``, ``config file
    x.toml``, a deployment variable such as ``APPLECONNECT_DATABASE_URL``, or nothing (sandbox)."""

    mode: Mode
    chosen_by: str = ""

    @property
    def reason(self) -> str:
        return f"chosen by {self.chosen_by}" if self.chosen_by else "default: no configuration"

    def __str__(self) -> str:
        return f"{self.mode} mode ({self.reason})"

    def note(self) -> str:
        """What an error about the configuration ends with, so that the operator sees why the
        service is in this mode: `` (production mode, chosen by APPLECONNECT_TEAM_ID; …)``."""
        if not self.chosen_by:
            return ""
        hint = ""
        if self.chosen_by.startswith(ENV_PREFIX) and self.chosen_by != ENV_PREFIX + "MODE":
            hint = "; without it and without --config, serve runs the sandbox"
        return f" ({self.mode} mode, {self.reason}{hint})"


def _checked_mode(value: object, source: str) -> Mode:
    if value == "sandbox" or value == "production":
        return value
    raise SettingsError(f"{source}: must be 'sandbox' or 'production', not {value!r}.")


def _mode_of(
    config: Path | None, file_values: Mapping[str, Any], environ: Mapping[str, str]
) -> ModeChoice:
    """The rule, first match wins: ``APPLECONNECT_MODE``; ``mode`` in the config file; a config
    file (production); a variable for a :data:`DEPLOYMENT_SETTINGS` setting (production);
    otherwise sandbox."""
    variable = ENV_PREFIX + "MODE"
    if variable in environ:
        return ModeChoice(_checked_mode(environ[variable], variable), variable)
    if config is not None and "mode" in file_values:
        return ModeChoice(_checked_mode(file_values["mode"], "mode"), f"mode in {config}")
    if config is not None:
        return ModeChoice("production", f"config file {config}")
    deployment = sorted(
        key
        for key in environ
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in DEPLOYMENT_SETTINGS
    )
    if deployment:
        return ModeChoice("production", deployment[0])
    return ModeChoice("sandbox")


def choose_mode(*, config: Path | None, environ: Mapping[str, str] | None = None) -> ModeChoice:
    """The mode ``serve`` and the service commands run in, and what chose it (the rule is in
    ``docs/service.md#which-mode``)."""
    environ = os.environ if environ is None else environ
    return _mode_of(config, _read_config(config) if config is not None else {}, environ)


def _read_config(config: Path) -> dict[str, Any]:
    """The settings in a TOML file, each checked and converted."""
    try:
        raw = config.read_bytes()
    except OSError as exc:
        raise SettingsError(f"config: cannot read {config}: {exc.strerror}.") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise SettingsError(f"config: {config} is larger than {MAX_CONFIG_BYTES} bytes.")
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config: {config} is not valid TOML: {exc}.") from exc
    values: dict[str, Any] = {}
    for key, value in _flatten(table).items():
        if key not in _FIELDS:
            raise SettingsError(f"config: unknown setting {key!r} in {config}.")
        values[key] = _coerce(key, value)
    return values


def _read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings in ``APPLECONNECT_*`` variables; an unknown or invalid one is named."""
    values: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in _FIELDS:
            renamed = RENAMED_VARIABLES.get(key)
            hint = f"; use {renamed}" if renamed else ""
            raise SettingsError(f"{key}: unknown setting{hint} (see docs/service.md).")
        try:
            values[name] = _coerce(name, value)
        except SettingsError as exc:
            raise SettingsError(f"{str(exc).rstrip('.')} (set by {key}).") from None
    return values


def load_settings(
    *,
    data_dir: Path | None = None,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from a TOML file, the environment and overrides, and validate.

    Without an explicit ``mode``, :func:`choose_mode`'s rule decides it.
    """
    environ = os.environ if environ is None else environ
    file_values = _read_config(config) if config is not None else {}
    values: dict[str, Any] = {**file_values, **_read_environment(environ)}
    values["mode"] = _mode_of(config, file_values, environ).mode
    if data_dir is not None:
        values["data_dir"] = Path(data_dir)
    for key, value in (overrides or {}).items():
        if key not in _FIELDS:
            raise SettingsError(f"{key}: unknown setting.")
        values[key] = value
    return Settings(**values)


def _flatten(table: Mapping[str, Any]) -> dict[str, Any]:
    """Accept both flat keys and one level of sections (``[smtp] host`` → ``smtp_host``)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                name = sub if key == "service" else f"{key}_{sub}"
                flat[name] = inner
        else:
            flat[key] = value
    return flat
