"""The emulator's state: teams, keys, clients, Apple IDs, consents, codes and tokens.

Every record lives in memory (reads are dictionary look-ups) and is written through to the
:class:`~appleconnect.emulator._store.Store` on each change, so that a state directory survives
restarts. One re-entrant lock serialises every change, so the state can be used from the event
loop and from worker threads alike.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import _jose
from ._store import Store, private_directory
from .records import (
    KINDS,
    AccessToken,
    Account,
    AppTransfer,
    BooleanClaims,
    Client,
    ClientKey,
    ClientKind,
    Code,
    Consent,
    DefaultTeam,
    EmulatorSettings,
    PendingAuthorization,
    RefreshToken,
    SigningKey,
    Team,
    Transfer,
    from_dict,
)

log = logging.getLogger(__name__)

APPLE_ISSUER = "https://appleid.apple.com"
CODE_TTL = 300
"""Authorization codes are valid for five minutes (Apple, "Generate and validate tokens")."""
ACCESS_TOKEN_TTL = 3600
"""``expires_in`` of every access token."""
ID_TOKEN_TTL_AUTHORIZE = 600
"""Lifetime of id_tokens sent to the redirect URI (observed: 10 minutes)."""
ID_TOKEN_TTL_TOKEN = 86400
"""Lifetime of id_tokens from ``/auth/token`` (observed: 24 hours)."""
CLIENT_SECRET_MAX_TTL = 15_777_000
"""Apple refuses a client secret whose ``exp`` is further than this from now."""
CLIENT_SECRET_IAT_SKEW = 60
"""How far in the future a client secret's ``iat`` may be before it is refused."""
MIGRATION_WINDOW = 60 * 86400
"""The user-migration endpoints work for 60 days after a transfer (TN3159)."""
DEFAULT_KEY_GRACE = 7 * 86400
"""How long a rotated-out signing key stays in the JWKS by default."""
RELAY_DOMAIN = "privaterelay.appleid.com"

MAX_ACCOUNTS = 10_000
MAX_REDIRECT_URIS = 100
MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 64
MAX_EMAIL_LENGTH = 254


class StateError(ValueError):
    """Raised when a state helper is given an invalid or unknown value; the message says which."""


DEFAULT_REDIRECT_URIS = (
    "http://localhost:8000/auth/apple/callback",
    "http://127.0.0.1:8000/auth/apple/callback",
    "https://localhost:8443/auth/apple/callback",
    "https://example.com/auth/apple/callback",
)
DEFAULT_ACCOUNTS = (
    ("maria.ruiz@example.com", "Maria", "Ruiz"),
    ("li.wei@example.com", "Li", "Wei"),
    ("sam.okafor@example.com", "Sam", "Okafor"),
)


def validate_redirect_uri(uri: str) -> str:
    """Check that a return URL can be registered: absolute http(s), a host, no fragment.

    Apple itself requires HTTPS and a domain name; the emulator also accepts ``http://`` and
    ``localhost``/IP hosts, which is its point. What is registered must still match exactly.
    """
    if len(uri) > MAX_URL_LENGTH:
        raise StateError(f"A redirect URI may be at most {MAX_URL_LENGTH} characters.")
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StateError(f"Redirect URI {uri!r} must be an absolute http:// or https:// URL.")
    if "#" in uri:
        raise StateError(f"Redirect URI {uri!r} must not contain a fragment (#).")
    return uri


def _check_client_id(client_id: str) -> str:
    if not client_id or len(client_id) > 255 or any(c.isspace() for c in client_id):
        raise StateError("A client id must be 1 to 255 characters without spaces.")
    return client_id


def _check_email(email: str) -> str:
    email = email.strip()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > MAX_EMAIL_LENGTH:
        raise StateError(f"{email!r} is not an email address.")
    if any(c.isspace() or c in "<>\"'" for c in email):
        raise StateError(f"{email!r} is not an email address.")
    return email.lower()


def _check_name(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise StateError(f"A name may be at most {MAX_NAME_LENGTH} characters.")
    return name


class EmulatorState:
    """All of the emulator's data, with the helpers that tests and the service's sandbox use.

    Create it through :func:`appleconnect.emulator.create_emulator_app`; the app exposes it as
    ``app.state.emulator``. ``state_dir=None`` keeps everything in memory.
    """

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        issuer: str = APPLE_ISSUER,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.issuer = issuer
        self.state_dir = state_dir
        self._base_clock: Callable[[], float] = clock or time.time
        self._lock = threading.RLock()
        self._store = Store(state_dir / "emulator.sqlite3" if state_dir is not None else None)
        self._data: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        for kind, cls in KINDS.items():
            for key, record in self._store.load(kind):
                self._data[kind][key] = from_dict(cls, record)
        settings = dict(self._store.load("settings")).get("settings")
        if settings is None:
            self.settings = EmulatorSettings(hmac_secret=secrets.token_hex(32))
            self._save_settings()
        else:
            self.settings = from_dict(EmulatorSettings, settings)
        self._signers: dict[str, _jose.Signer] = {}
        self._writes = 0
        # Where the Private Email Relay's SMTP server listens, for credentials.json (when it runs).
        self.smtp_address: tuple[str, int] | None = None
        default = dict(self._store.load("meta")).get("default_team")
        if default is None or default["team_id"] not in self._data["team"]:
            self._default = self._create_default_team()
        else:
            self._default = DefaultTeam(
                team_id=default["team_id"],
                key_id=default["key_id"],
                private_key_pem=default["private_key_pem"],
                services_id=default["services_id"],
                app_id=default["app_id"],
                redirect_uris=tuple(default["redirect_uris"]),
            )
        if not self.active_signing_keys():
            self.rotate_signing_key(grace_seconds=0)

    # -- clock -----------------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's current time: the injected clock plus the control API's offset."""
        return self._base_clock() + self.settings.clock_offset

    def set_clock_offset(self, seconds: float) -> None:
        """Shift the emulator's clock (to expire codes, tokens and secrets without waiting)."""
        with self._lock:
            self.settings.clock_offset = float(seconds)
            self._save_settings()

    def set_boolean_claims(self, mode: BooleanClaims) -> None:
        """Send ``email_verified``/``is_private_email`` as ``"true"`` strings or JSON booleans."""
        if mode not in ("string", "boolean"):
            raise StateError("boolean_claims must be 'string' or 'boolean'.")
        with self._lock:
            self.settings.boolean_claims = mode
            self._save_settings()

    # -- persistence -----------------------------------------------------------------------------

    def _save_settings(self) -> None:
        self._store.put("settings", "settings", vars(self.settings))

    def _put(self, kind: str, key: str, record: Any) -> None:
        # vars(), not asdict(): the store only serialises the fields, and asdict's deep copy is
        # the costliest step of a write on the /auth/token path.
        self._data[kind][key] = record
        self._store.put(kind, key, vars(record))

    def _put_expiring(self, kind: str, key: str, record: Any) -> None:
        # Codes and access tokens pile up: every 256th one purges the long-expired ones.
        self._put(kind, key, record)
        self._writes += 1
        if self._writes % 256 == 0:
            self._purge(self.now())

    def _delete(self, kind: str, key: str) -> None:
        self._data[kind].pop(key, None)
        self._store.delete(kind, key)

    def _all(self, kind: str) -> list[Any]:
        return list(self._data[kind].values())

    def close(self) -> None:
        """Close the state directory's database."""
        self._store.close()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state lock for a multi-step change, written to the store in one transaction."""
        with self._lock, self._store.batch():
            yield

    # -- default team and credentials.json -------------------------------------------------------

    def _create_default_team(self) -> DefaultTeam:
        with self._lock:
            team_info = self.create_team(app_id="com.example.app", services_id="com.example.web")
            for uri in DEFAULT_REDIRECT_URIS:
                self.register_redirect_uri("com.example.web", uri)
            if not self._data["account"]:
                for email, first, last in DEFAULT_ACCOUNTS:
                    self.create_account(email=email, first_name=first, last_name=last)
            default = DefaultTeam(
                team_id=team_info["team_id"],
                key_id=team_info["key_id"],
                private_key_pem=team_info["private_key_pem"],
                services_id="com.example.web",
                app_id="com.example.app",
                redirect_uris=DEFAULT_REDIRECT_URIS,
            )
            log.info("default team %s created (key %s)", default.team_id, default.key_id)
            meta = asdict(default)
            meta["redirect_uris"] = list(default.redirect_uris)
            self._store.put("meta", "default_team", meta)
        return default

    @property
    def default_team(self) -> DefaultTeam:
        """The team created on first start: team_id, key_id, private key PEM, client ids."""
        return self._default

    def key_file_path(self, key_id: str) -> Path | None:
        """Where ``AuthKey_<KEYID>.p8`` is written in the state directory (None in memory)."""
        if self.state_dir is None:
            return None
        return self.state_dir / f"AuthKey_{key_id}.p8"

    def credentials(self, base_url: str | None = None) -> dict[str, Any]:
        """What ``credentials.json`` holds: enough to configure a client from that file alone."""
        d = self._default
        team = self._data["team"][d.team_id]
        key_path = self.key_file_path(d.key_id)
        out: dict[str, Any] = {
            "issuer": self.issuer,
            "team_id": d.team_id,
            "key_id": d.key_id,
            "private_key_path": str(key_path) if key_path is not None else None,
            "private_key_pem": d.private_key_pem,
            "services_id": d.services_id,
            "app_id": d.app_id,
            "client_ids": [d.services_id, d.app_id],
            "redirect_uris": list(self._data["client"][d.services_id].redirect_uris),
            "notification_url": team.notification_url,
            "accounts": [self.account_json(a) for a in self.list_accounts()],
        }
        if base_url is not None:
            out["base_url"] = base_url
        if self.smtp_address is not None:
            out["smtp_host"], out["smtp_port"] = self.smtp_address
        return out

    def write_credentials(self, base_url: str | None = None) -> Path | None:
        """Write ``credentials.json`` and the key files (atomically); return the file's path."""
        if self.state_dir is None:
            return None
        private_directory(self.state_dir)
        for key in self._all("client_key"):
            path = self.key_file_path(key.key_id)
            if key.private_pem and path is not None and not path.exists():
                _atomic_write(path, key.private_pem, mode=0o600)
        path = self.state_dir / "credentials.json"
        _atomic_write(path, json.dumps(self.credentials(base_url), indent=2) + "\n", mode=0o600)
        return path

    # -- teams, keys, clients --------------------------------------------------------------------

    def create_team(
        self,
        *,
        team_id: str | None = None,
        app_id: str | None = None,
        services_id: str | None = None,
        notification_url: str | None = None,
    ) -> dict[str, Any]:
        """Create a team with a P-256 key, an App ID and (optionally) a Services ID.

        Returns ``team_id``, ``key_id``, ``private_key_pem``, ``app_id``, ``services_id``.
        """
        with self._lock:
            team_id = team_id or _jose.random_id()
            if not (team_id.isalnum() and len(team_id) <= 20):
                raise StateError("A Team ID is letters and digits (Apple's are 10 characters).")
            if team_id in self._data["team"]:
                raise StateError(f"Team {team_id} already exists.")
            app_id = app_id or f"com.example.{team_id.lower()}.app"
            for cid in (app_id, services_id):
                if cid is not None and cid in self._data["client"]:
                    raise StateError(f"Client id {cid} is already registered.")
            if notification_url is not None:
                validate_redirect_uri(notification_url)
            self._put("team", team_id, Team(team_id, app_id, notification_url))
            self.create_client(client_id=app_id, team_id=team_id, kind="native")
            if services_id is not None:
                self.create_client(client_id=services_id, team_id=team_id, kind="web")
            key = self.create_client_key(team_id)
        return {
            "team_id": team_id,
            "key_id": key["key_id"],
            "private_key_pem": key["private_key_pem"],
            "app_id": app_id,
            "services_id": services_id,
        }

    def create_client_key(self, team_id: str) -> dict[str, str]:
        """Create another Sign in with Apple key for a team; returns key_id and private_key_pem."""
        with self._lock:
            self.get_team(team_id)
            private, public = _jose.new_ec_pem()
            key_id = _jose.random_id()
            self._put("client_key", key_id, ClientKey(key_id, team_id, public, private))
            path = self.key_file_path(key_id)
            if path is not None:
                _atomic_write(path, private, mode=0o600)
        return {"key_id": key_id, "private_key_pem": private}

    def add_client_public_key(self, team_id: str, key_id: str, public_pem: str) -> None:
        """Register a public key that you generated yourself under a Key ID of your choice."""
        with self._lock:
            self.get_team(team_id)
            if key_id in self._data["client_key"]:
                raise StateError(f"Key {key_id} already exists.")
            try:
                _jose.ec_public_key(public_pem)
            except Exception as exc:  # joserfc raises several types for bad PEM
                raise StateError("public_pem is not a P-256 public key PEM.") from exc
            self._put("client_key", key_id, ClientKey(key_id, team_id, public_pem, None))

    def client_key(self, key_id: str) -> ClientKey | None:
        """The registered client-secret key with this Key ID, if any."""
        return self._data["client_key"].get(key_id)

    def get_team(self, team_id: str) -> Team:
        """The team with this Team ID (``StateError`` if unknown)."""
        team = self._data["team"].get(team_id)
        if team is None:
            raise StateError(f"Unknown team {team_id!r}.")
        return team  # type: ignore[no-any-return]

    def list_teams(self) -> list[Team]:
        """Every team."""
        return self._all("team")

    def team_json(self, team: Team) -> dict[str, Any]:
        """A team as the control API shows it."""
        return {
            "team_id": team.team_id,
            "app_id": team.app_id,
            "notification_url": team.notification_url,
            "key_ids": [k.key_id for k in self._all("client_key") if k.team_id == team.team_id],
            "client_ids": [c.client_id for c in self._all("client") if c.team_id == team.team_id],
        }

    def create_client(
        self,
        *,
        client_id: str,
        team_id: str,
        kind: ClientKind = "web",
        redirect_uris: list[str] | None = None,
    ) -> Client:
        """Register a Services ID (``web``) or an App ID (``native``) for a team."""
        with self._lock:
            _check_client_id(client_id)
            self.get_team(team_id)
            if kind not in ("web", "native"):
                raise StateError("kind must be 'web' or 'native'.")
            if client_id in self._data["client"]:
                raise StateError(f"Client id {client_id} is already registered.")
            client = Client(client_id, team_id, kind, [])
            self._put("client", client_id, client)
            for uri in redirect_uris or []:
                self.register_redirect_uri(client_id, uri)
        return client

    def get_client(self, client_id: str) -> Client | None:
        """The client with exactly this id (case-sensitive, like Apple), if any."""
        if self._data["app_transfer"]:
            self._complete_due_transfers()
        return self._data["client"].get(client_id)

    def list_clients(self) -> list[Client]:
        """Every client id."""
        if self._data["app_transfer"]:
            self._complete_due_transfers()
        return self._all("client")

    def register_redirect_uri(self, client_id: str, uri: str) -> None:
        """Allow a return URL for a client (``http://localhost`` is accepted here)."""
        with self._lock:
            client = self.get_client(client_id)
            if client is None:
                raise StateError(f"Unknown client id {client_id!r}.")
            validate_redirect_uri(uri)
            if uri not in client.redirect_uris:
                if len(client.redirect_uris) >= MAX_REDIRECT_URIS:
                    raise StateError(f"At most {MAX_REDIRECT_URIS} return URLs per client.")
                client.redirect_uris.append(uri)
                self._put("client", client_id, client)

    def set_notification_url(self, url: str | None, *, team_id: str | None = None) -> None:
        """Set (or clear) where a team's server-to-server notifications go (default team)."""
        with self._lock:
            team = self.get_team(team_id or self._default.team_id)
            if url is not None:
                validate_redirect_uri(url)
            team.notification_url = url
            self._put("team", team.team_id, team)

    # -- signing keys (the JWKS) -----------------------------------------------------------------

    def rotate_signing_key(self, *, grace_seconds: float = DEFAULT_KEY_GRACE) -> str:
        """Make a new RSA key the signing key; the old ones stay published for ``grace_seconds``."""
        pem = _jose.new_rsa_pem()
        with self._lock:
            now = self.now()
            for key in self.active_signing_keys():
                key.retired_at = now
                key.expires_at = now + grace_seconds
                self._put("signing_key", key.kid, key)
            kid = _jose.random_kid()
            self._put("signing_key", kid, SigningKey(kid, pem, now))
        return kid

    def active_signing_keys(self) -> list[SigningKey]:
        """Keys that sign (normally exactly one)."""
        return [k for k in self._all("signing_key") if k.retired_at is None]

    def published_signing_keys(self) -> list[SigningKey]:
        """Keys in the JWKS: the signing key first, then retired keys still in their grace."""
        now = self.now()
        keys = [
            k
            for k in self._all("signing_key")
            if k.retired_at is None or (k.expires_at is not None and k.expires_at > now)
        ]
        return sorted(keys, key=lambda k: (k.retired_at is not None, -k.created))

    def signer(self, kid: str | None = None) -> _jose.Signer:
        """The signer for ``kid`` (default: the current signing key)."""
        if kid is None:
            kid = sorted(self.active_signing_keys(), key=lambda k: -k.created)[0].kid
        signer = self._signers.get(kid)
        if signer is None:
            signer = _jose.Signer(kid, self._data["signing_key"][kid].private_pem)
            self._signers[kid] = signer
        return signer

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """``{"keys": [...]}`` as ``/auth/keys`` serves it."""
        return {"keys": [self.signer(k.kid).jwk() for k in self.published_signing_keys()]}

    # -- accounts --------------------------------------------------------------------------------

    def create_account(self, *, email: str, first_name: str = "", last_name: str = "") -> Account:
        """Create a test Apple ID; the email must not be in use."""
        with self._lock:
            email = _check_email(email)
            if any(a.email == email for a in self._all("account")):
                raise StateError(f"An Apple ID with email {email} already exists.")
            if len(self._data["account"]) >= MAX_ACCOUNTS:
                raise StateError(f"At most {MAX_ACCOUNTS} Apple IDs.")
            account = Account(
                id=secrets.token_hex(6),
                email=email,
                first_name=_check_name(first_name),
                last_name=_check_name(last_name),
            )
            self._put("account", account.id, account)
        return account

    def list_accounts(self) -> list[Account]:
        """Every test Apple ID, oldest first."""
        return self._all("account")

    def find_account(self, ref: str) -> Account | None:
        """An Apple ID by id or by email (case-insensitive)."""
        account = self._data["account"].get(ref)
        if account is not None:
            return account  # type: ignore[no-any-return]
        ref = ref.strip().lower()
        return next((a for a in self._all("account") if a.email == ref), None)

    def account_json(self, account: Account) -> dict[str, Any]:
        """An Apple ID as the control API lists it, with its ``sub`` for each team."""
        return {
            "id": account.id,
            "email": account.email,
            "name": {"firstName": account.first_name, "lastName": account.last_name},
            "subs": {t.team_id: self.sub_for(account.id, t.team_id) for t in self.list_teams()},
            "consents": [
                {
                    "team_id": c.team_id,
                    "client_id": c.client_id,
                    "share_email": c.share_email,
                    "email": self.token_email(account, c),
                    "scopes": c.scopes,
                }
                for c in self._all("consent")
                if c.account_id == account.id
            ],
            "email_forwarding": {
                t.team_id: account.forwarding.get(t.team_id, True) for t in self.list_teams()
            },
        }

    def remove_account(self, account_id: str) -> None:
        """Delete an Apple ID and everything issued to it (no notification: see the control API)."""
        with self.locked():
            for kind in ("consent", "code", "refresh_token", "access_token", "transfer"):
                for key, record in list(self._data[kind].items()):
                    if record.account_id == account_id:
                        self._delete(kind, key)
            self._delete("account", account_id)

    def set_forwarding(self, account_id: str, team_id: str, enabled: bool) -> None:
        """Turn email forwarding from the relay address for one team on or off."""
        with self._lock:
            account = self._data["account"][account_id]
            account.forwarding[team_id] = enabled
            self._put("account", account_id, account)

    # -- identities ------------------------------------------------------------------------------

    def _digest(self, *parts: str) -> bytes:
        msg = "\x1f".join(parts).encode("utf-8")
        return hmac.new(bytes.fromhex(self.settings.hmac_secret), msg, hashlib.sha256).digest()

    def _apple_id_format(self, digest: bytes) -> str:
        # Apple's format: six digits, 32 lower-case hex digits, four digits.
        head = int.from_bytes(digest[:4], "big") % 1_000_000
        tail = int.from_bytes(digest[20:24], "big") % 10_000
        return f"{head:06d}.{digest[4:20].hex()}.{tail:04d}"

    def sub_for(self, account_id: str, team_id: str) -> str:
        """The user's team-scoped ``sub`` (stable, different for every team)."""
        return self._apple_id_format(self._digest("sub", team_id, account_id))

    def relay_email_for(self, account_id: str, team_id: str) -> str:
        """The Hide My Email address of an Apple ID for one team (stable per user and team)."""
        local = base64.b32encode(self._digest("relay", team_id, account_id)[:10]).decode().lower()
        return f"{local[:10]}@{RELAY_DOMAIN}"

    def transfer_sub_for(self, account_id: str, target_team: str) -> str:
        """The ``transfer_sub`` of an Apple ID for a receiving team."""
        return self._apple_id_format(self._digest("transfer", target_team, account_id))

    def account_for_sub(self, sub: str, team_id: str) -> Account | None:
        """The Apple ID whose ``sub`` for this team is ``sub``."""
        return next(
            (a for a in self._all("account") if self.sub_for(a.id, team_id) == sub),
            None,
        )

    def token_email(self, account: Account, consent: Consent) -> str:
        """The address the team sees: the real one or the team's relay address."""
        if consent.share_email:
            return account.email
        return self.relay_email_for(account.id, consent.team_id)

    # -- consents, codes and tokens --------------------------------------------------------------

    def consent(self, account_id: str, team_id: str) -> Consent | None:
        """The consent of an Apple ID for a team, if it uses Sign in with Apple there."""
        return self._data["consent"].get(f"{account_id}|{team_id}")

    def save_consent(self, consent: Consent) -> None:
        """Record a consent."""
        with self._lock:
            self._put("consent", f"{consent.account_id}|{consent.team_id}", consent)

    def end_consent(self, account_id: str, team_id: str) -> bool:
        """End a consent and invalidate every token and code it produced; True if there was one."""
        with self.locked():
            existed = self.consent(account_id, team_id) is not None
            self._delete("consent", f"{account_id}|{team_id}")
            for kind in ("code", "refresh_token", "access_token"):
                for key, record in list(self._data[kind].items()):
                    if record.account_id == account_id and record.team_id == team_id:
                        self._delete(kind, key)
        return existed

    def consents_of(self, account_id: str) -> list[Consent]:
        """Every team an Apple ID has consented to."""
        return [c for c in self._all("consent") if c.account_id == account_id]

    def _token(self, prefix: str) -> str:
        # Apple's codes and tokens look like ``c<32 hex>.0.<4 letters>.<22 base64url>``.
        raw = secrets.token_bytes(34)  # one read of the system's random source
        tail = base64.urlsafe_b64encode(raw[18:]).rstrip(b"=").decode("ascii")
        return f"{prefix}{raw[:16].hex()}.0.{raw[16:18].hex()}.{tail}"

    def issue_code(
        self,
        *,
        client_id: str,
        account_id: str,
        redirect_uri: str | None,
        nonce: str | None,
        scopes: list[str],
        first: bool,
    ) -> Code:
        """Create a five-minute, single-use authorization code."""
        client = self.get_client(client_id)
        if client is None:
            raise StateError(f"Unknown client id {client_id!r}.")
        now = self.now()
        code = Code(
            code=self._token("c"),
            client_id=client_id,
            team_id=client.team_id,
            account_id=account_id,
            redirect_uri=redirect_uri,
            nonce=nonce,
            scopes=scopes,
            expires_at=now + CODE_TTL,
            auth_time=int(now),
            first=first,
        )
        with self._lock:
            self._put_expiring("code", code.code, code)
        return code

    def _purge(self, now: float) -> None:
        # Keep used and expired codes and tokens for an hour, so that a replay gets "already
        # used" rather than "expired or revoked", then forget them. Runs every 256 writes.
        with self._store.batch():
            for kind in ("code", "access_token"):
                for key, record in list(self._data[kind].items()):
                    if record.expires_at + 3600 < now:
                        self._delete(kind, key)

    def get_code(self, code: str) -> Code | None:
        """The code record, if known."""
        return self._data["code"].get(code)

    def mark_code_used(self, code: Code) -> None:
        """Spend a code."""
        with self._lock:
            code.used = True
            self._put("code", code.code, code)

    def issue_refresh_token(self, code: Code) -> RefreshToken:
        """A refresh token for the user and client of a code."""
        token = RefreshToken(
            token=self._token("r"),
            client_id=code.client_id,
            team_id=code.team_id,
            account_id=code.account_id,
            scopes=code.scopes,
            auth_time=code.auth_time,
        )
        with self._lock:
            self._put("refresh_token", token.token, token)
        return token

    def get_refresh_token(self, token: str) -> RefreshToken | None:
        """The refresh-token record, if known."""
        return self._data["refresh_token"].get(token)

    def issue_access_token(
        self, *, client_id: str, team_id: str, account_id: str | None, scope: str = ""
    ) -> AccessToken:
        """A one-hour access token."""
        token = AccessToken(
            token=self._token("a"),
            client_id=client_id,
            team_id=team_id,
            account_id=account_id,
            scope=scope,
            expires_at=self.now() + ACCESS_TOKEN_TTL,
        )
        with self._lock:
            self._put_expiring("access_token", token.token, token)
        return token

    def revoke_access_token(self, token: str) -> None:
        """Make one access token stop working."""
        with self._lock:
            record = self._data["access_token"].get(token)
            if record is not None:
                record.revoked = True
                self._put("access_token", token, record)

    def get_access_token(self, token: str) -> AccessToken | None:
        """The access-token record, if known."""
        return self._data["access_token"].get(token)

    # -- pending authorizations (the consent page) -----------------------------------------------

    def save_pending(self, params: dict[str, str]) -> PendingAuthorization:
        """Remember a validated authorization request until the consent form comes back."""
        now = self.now()
        pending = PendingAuthorization(secrets.token_urlsafe(16), params, now + 1800)
        with self._lock:
            for key, old in list(self._data["pending"].items()):
                if old.expires_at < now:
                    self._delete("pending", key)
            self._put("pending", pending.id, pending)
        return pending

    def take_pending(self, pending_id: str) -> PendingAuthorization | None:
        """Fetch and forget a pending authorization (each consent form answers once)."""
        with self._lock:
            pending = self.peek_pending(pending_id)
            if pending is not None:
                self._delete("pending", pending_id)
            return pending

    def peek_pending(self, pending_id: str) -> PendingAuthorization | None:
        """A pending authorization without consuming it."""
        pending = self._data["pending"].get(pending_id)
        if pending is None or pending.expires_at < self.now():
            return None
        return pending  # type: ignore[no-any-return]

    # -- migration -------------------------------------------------------------------------------

    def transfer_app(
        self,
        *,
        app_id: str,
        to_team: str,
        services_ids: list[str] | None = None,
        at: float | None = None,
    ) -> AppTransfer:
        """Move an App ID and its Services IDs to another team at ``at`` (default: now).

        ``services_ids=None`` moves every Services ID (web client) of the App ID's team. Until
        ``at`` the recipient is refused for these client ids; from then on the sender is, and
        sign-ins give the recipient's ``sub`` (with ``transfer_sub`` for the users the sender
        exported); the 60-day migration window counts from ``at``.
        """
        with self.locked():
            client_ids = self._transferable(app_id, to_team, services_ids)
            app = self._data["client"][app_id]
            when = self.now() if at is None else float(at)
            transfer = AppTransfer(app_id, client_ids, app.team_id, to_team, when)
            self._put("app_transfer", app_id, transfer)
            log.info("app %s moves from team %s to %s at %s", app_id, app.team_id, to_team, when)
        self._complete_due_transfers()
        return transfer

    def _transferable(self, app_id: str, to_team: str, services_ids: list[str] | None) -> list[str]:
        app = self.get_client(app_id)
        if app is None or app.kind != "native":
            raise StateError(f"{app_id!r} is not a registered App ID.")
        self.get_team(to_team)
        if app.team_id == to_team:
            raise StateError(f"{app_id} already belongs to team {to_team}.")
        if any(not t.done for t in self._all("app_transfer") if app_id in t.client_ids):
            raise StateError(f"A transfer of {app_id} is already scheduled.")
        if services_ids is None:
            services_ids = [
                c.client_id
                for c in self._all("client")
                if c.team_id == app.team_id and c.kind == "web"
            ]
        for services_id in services_ids:
            client = self.get_client(services_id)
            if client is None or client.kind != "web" or client.team_id != app.team_id:
                raise StateError(f"{services_id!r} is not a Services ID of team {app.team_id}.")
        return [app_id, *services_ids]

    def _complete_due_transfers(self) -> None:
        # Called on every client look-up once an app transfer exists: cheap unless one is due.
        now = self.now()
        due = [t for t in self._all("app_transfer") if not t.done and t.at <= now]
        if not due:
            return
        with self.locked():
            for transfer in due:
                if transfer.done:  # another thread completed it meanwhile
                    continue
                for client_id in transfer.client_ids:
                    client = self._data["client"][client_id]
                    client.team_id = transfer.to_team
                    self._put("client", client_id, client)
                self._move_consents(transfer)
                transfer.done = True
                self._put("app_transfer", transfer.app_id, transfer)
                log.info("app %s now belongs to team %s", transfer.app_id, transfer.to_team)

    def _move_consents(self, transfer: AppTransfer) -> None:
        # The users' consents move with the app: no first-time consent in the new team.
        for consent in self._all("consent"):
            if (
                consent.team_id != transfer.from_team
                or consent.client_id not in transfer.client_ids
            ):
                continue
            if self.consent(consent.account_id, transfer.to_team) is None:
                moved = dataclasses.replace(consent, team_id=transfer.to_team, created=self.now())
                self._put("consent", f"{moved.account_id}|{moved.team_id}", moved)

    def list_app_transfers(self) -> list[AppTransfer]:
        """Every app transfer, scheduled or done."""
        if self._data["app_transfer"]:
            self._complete_due_transfers()
        return self._all("app_transfer")

    def completed_app_transfer(self, from_team: str, to_team: str) -> AppTransfer | None:
        """The latest completed move of an app from ``from_team`` to ``to_team``, if any."""
        if self._data["app_transfer"]:
            self._complete_due_transfers()
        done = [
            t
            for t in self._all("app_transfer")
            if t.done and t.from_team == from_team and t.to_team == to_team
        ]
        return max(done, key=lambda t: t.at, default=None)

    def record_transfer(self, account_id: str, from_team: str, to_team: str) -> Transfer:
        """Remember a ``transfer_sub`` generated by the sending team for a user."""
        transfer_sub = self.transfer_sub_for(account_id, to_team)
        with self._lock:
            existing = self._data["transfer"].get(transfer_sub)
            if existing is not None:
                return existing  # type: ignore[no-any-return]
            transfer = Transfer(transfer_sub, account_id, from_team, to_team, self.now())
            self._put("transfer", transfer_sub, transfer)
        return transfer

    def get_transfer(self, transfer_sub: str) -> Transfer | None:
        """A transfer record by ``transfer_sub``."""
        return self._data["transfer"].get(transfer_sub)

    def active_transfer_to(self, account_id: str, team_id: str) -> Transfer | None:
        """The exported transfer of this Apple ID into this team, when an app moved from the
        sending team to this one less than 60 days ago (its id_tokens carry ``transfer_sub``)."""
        now = self.now()
        for transfer in self._all("transfer"):
            if transfer.account_id != account_id or transfer.to_team != team_id:
                continue
            moved = self.completed_app_transfer(transfer.from_team, team_id)
            if moved is not None and moved.at + MIGRATION_WINDOW > now:
                return transfer  # type: ignore[no-any-return]
        return None


def _atomic_write(path: Path, text: str, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
