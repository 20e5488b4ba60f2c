"""Keyword-only data functions over the database. Route handlers stay thin by calling these.

Every function takes the database session as ``db`` and leaves committing to the caller, unless
its docstring says otherwise.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.sql import Executable

from .db import DbSession
from .models import (
    AdminLoginToken,
    ApiKey,
    AppleToken,
    AuditEvent,
    AuthRequest,
    NotificationSeen,
    OutboxMail,
    PendingName,
    RateLimitCounter,
    Session,
    SettingValue,
    User,
    table_of,
    utcnow,
)
from .reads import Reads
from .security import (
    API_KEY_PREFIX,
    HANDOFF_PREFIX,
    LOGIN_PREFIX,
    SESSION_PREFIX,
    Encryptor,
    constant_time_equal,
    hash_token,
    new_token,
)

MAX_TOKEN_LENGTH = 200
_LAST_USED_RESOLUTION = timedelta(seconds=60)


async def _rows_changed(db: DbSession, statement: Executable) -> int:
    """Run an UPDATE or DELETE and return how many rows it changed.

    ``AsyncSession.execute`` is typed as returning a ``Result``; for these statements it is a
    ``CursorResult``, the one that has ``rowcount``.
    """
    result = await db.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


# --- API keys ---------------------------------------------------------------------------------


async def create_api_key(
    *, db: DbSession, name: str, now: datetime | None = None, actor: str | None = None
) -> str:
    """Create an API key and return it; only its hash is stored, so it is shown once.

    With an ``actor`` (``admin`` for the panel, ``cli`` for ``appleconnect apikey create``) the
    creation is written to the audit log, the same entry whoever made the key.
    """
    raw = new_token(API_KEY_PREFIX)
    db.add(
        ApiKey(
            name=name,
            key_hash=hash_token(raw),
            prefix=raw[:12],
            created_at=now or utcnow(),
        )
    )
    await db.flush()
    if actor is not None:
        await audit(db=db, event="admin.apikey_created", actor=actor, detail={"name": name})
    return raw


async def list_api_keys(*, db: DbSession) -> Sequence[ApiKey]:
    return (await db.scalars(select(ApiKey).order_by(ApiKey.id))).all()


async def revoke_api_key(
    *, db: DbSession, key_id: int, now: datetime | None = None, actor: str | None = None
) -> bool:
    """Revoke an active key; with an ``actor``, a revocation is written to the audit log (as
    :func:`create_api_key` does)."""
    done = (
        await _rows_changed(
            db,
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=now or utcnow()),
        )
        > 0
    )
    if done and actor is not None:
        await audit(db=db, event="admin.apikey_revoked", actor=actor, detail={"id": key_id})
    return done


_API_KEY_BY_HASH = select(ApiKey.id, ApiKey.key_hash, ApiKey.revoked_at, ApiKey.last_used_at).where(
    ApiKey.key_hash == bindparam("digest")
)
_API_KEY_USED = (
    update(ApiKey).where(ApiKey.id == bindparam("key_id")).values(last_used_at=bindparam("now"))
)


async def check_api_key(
    *,
    reads: Reads,
    sessions: async_sessionmaker[DbSession],
    raw: str,
    now: datetime | None = None,
) -> int | None:
    """The id of the active key matching ``raw``, or ``None``. One read; the key's last-used
    time is written (in a transaction of its own) only when it is over a minute old."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    digest = hash_token(raw)
    key = await reads.first(_API_KEY_BY_HASH, {"digest": digest})
    if key is None or key["revoked_at"] is not None:
        return None
    if not constant_time_equal(key["key_hash"], digest):  # pragma: no cover - defence in depth
        return None
    now = now or utcnow()
    last_used_at = key["last_used_at"]
    if last_used_at is None or now - last_used_at > _LAST_USED_RESOLUTION:
        async with sessions() as db:
            await db.execute(_API_KEY_USED, {"key_id": key["id"], "now": now})
            await db.commit()
    return int(key["id"])


# --- sessions ---------------------------------------------------------------------------------


SESSION_INSERT = insert(table_of(Session))


def session_values(
    *, user_id: int, ttl: int, now: datetime | None = None
) -> tuple[str, dict[str, Any]]:
    """A new session's token and its row (only the token's hash is stored)."""
    now = now or utcnow()
    raw = new_token(SESSION_PREFIX)
    return raw, {
        "token_hash": hash_token(raw),
        "user_id": user_id,
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl),
    }


async def create_session(
    *, db: DbSession, user_id: int, ttl: int, now: datetime | None = None
) -> str:
    """Open a session for ``user_id`` in the transaction of ``db``; returns its token."""
    raw, values = session_values(user_id=user_id, ttl=ttl, now=now)
    await (await db.connection()).execute(SESSION_INSERT, values)
    return raw


_SESSION_USER = (
    select(
        *User.__table__.columns,
        Session.token_hash.label("session_token_hash"),
        Session.expires_at.label("session_expires_at"),
    )
    .join_from(Session, User, User.id == Session.user_id)
    .where(Session.token_hash == bindparam("digest"))
)


async def session_user(*, reads: Reads, raw: str, now: datetime | None = None) -> User | None:
    """The user of a live session (a detached copy), or ``None`` for an unknown, expired or
    revoked token. One statement, built once; nothing is written."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    digest = hash_token(raw)
    row = await reads.first(_SESSION_USER, {"digest": digest})
    if row is None:
        return None
    values = dict(row)
    if not constant_time_equal(values.pop("session_token_hash"), digest):  # pragma: no cover
        return None
    if values.pop("session_expires_at") <= (now or utcnow()):
        return None
    # Built as the ORM loads an object (its state's dict filled, nothing marked modified), not
    # through ``User(**values)``, whose per-attribute events cost about 20 us per check.
    user: User = User.__mapper__.class_manager.new_instance()
    user.__dict__.update(values)
    return user


async def end_session(*, db: DbSession, raw: str) -> bool:
    return await _rows_changed(db, delete(Session).where(Session.token_hash == hash_token(raw))) > 0


async def end_user_sessions(*, db: DbSession, user_id: int) -> int:
    return await _rows_changed(db, delete(Session).where(Session.user_id == user_id))


# --- sign-in requests -------------------------------------------------------------------------


class StateError(Exception):
    """The ``state`` of a callback or ``apple_connect`` call is unusable; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason  # "unknown", "used" or "expired"
        super().__init__(reason)


@dataclass(frozen=True)
class NewAuthRequest:
    state: str
    nonce: str


def nonce_for(state: str) -> str:
    """The nonce of the sign-in request of ``state``: derived, so the row need not hold it.

    Whoever knows the state sees the nonce in the same authorization URL anyway; what matters
    is that Apple's token names this one sign-in, which a nonce bound to the state does.
    """
    digest = hashlib.sha256(b"appleconnect nonce\x00" + state.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _aware(value: datetime) -> datetime:
    """An aggregate's datetime (SQLite returns it naive and as text) as an aware UTC one."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class BudgetExceeded(Exception):
    """Too many sign-ins in progress from one address; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(retry_after)


async def create_auth_request(
    *,
    db: DbSession,
    kind: str,
    client_id: str,
    redirect_uri: str,
    next_path: str,
    ttl: int,
    browser_secret: str | None = None,
    client_bucket: str | None = None,
    budget: int = 0,
    now: datetime | None = None,
) -> NewAuthRequest:
    """Store a sign-in request. With ``budget``, first delete the expired ones and refuse
    (:class:`BudgetExceeded`) when ``client_bucket`` already holds ``budget`` live ones."""
    now = now or utcnow()
    if budget and client_bucket is not None:
        await _one_start_at_a_time(db, client_bucket)
        await db.execute(delete(AuthRequest).where(AuthRequest.expires_at <= now))
        count, oldest = (
            await db.execute(
                select(func.count(), func.min(AuthRequest.expires_at)).where(
                    AuthRequest.client_bucket == client_bucket
                )
            )
        ).one()
        if count >= budget:
            wait = (_aware(oldest) - now).total_seconds() if oldest is not None else ttl
            raise BudgetExceeded(max(1, math.ceil(wait)))
    state = secrets.token_urlsafe(32)
    db.add(
        AuthRequest(
            state_hash=hash_token(state),
            kind=kind,
            client_id=client_id,
            redirect_uri=redirect_uri,
            next_path=next_path,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            browser_hash=hash_token(browser_secret) if browser_secret else None,
            client_bucket=client_bucket,
        )
    )
    await db.flush()
    return NewAuthRequest(state=state, nonce=nonce_for(state))


async def _one_start_at_a_time(db: DbSession, client_bucket: str) -> None:
    """Until the transaction ends, no other counts ``client_bucket``'s sign-ins in progress.

    On PostgreSQL (read committed) concurrent starts from one address would each count only the
    rows committed before them and all insert: a lock per address (a transaction-level advisory
    lock on a 64-bit hash of the bucket) makes them count and insert one after the other. On
    SQLite the expired rows' ``DELETE`` before the count already takes the database's one write
    lock, held until commit."""
    if db.get_bind().dialect.name == "postgresql":
        bucket_key = func.hashtextextended(client_bucket, 0)
        await db.execute(select(func.pg_advisory_xact_lock(bucket_key)))


async def peek_auth_request(*, db: DbSession, state: str) -> AuthRequest | None:
    if not state or len(state) > MAX_TOKEN_LENGTH:
        return None
    return await db.scalar(select(AuthRequest).where(AuthRequest.state_hash == hash_token(state)))


def check_auth_request(
    request: AuthRequest | None, *, kind: str, now: datetime | None = None
) -> AuthRequest:
    """``request`` (a peeked one) if it could be used now; else :class:`StateError`. Changes
    nothing: :func:`consume_auth_request` still decides."""
    if request is None or request.kind != kind:
        raise StateError("unknown")
    if request.used_at is not None:
        raise StateError("used")
    if request.expires_at <= (now or utcnow()):
        raise StateError("expired")
    return request


async def consume_auth_request(
    *, db: DbSession, state: str, kind: str, now: datetime | None = None
) -> AuthRequest:
    """Mark the request of ``state`` used and return it; single use, even across processes.

    The conditional UPDATE is the lock: of two callbacks racing with one state, one wins.
    """
    now = now or utcnow()
    if not state or len(state) > MAX_TOKEN_LENGTH:
        raise StateError("unknown")
    digest = hash_token(state)
    changed = await _rows_changed(
        db,
        update(AuthRequest)
        .where(
            AuthRequest.state_hash == digest,
            AuthRequest.kind == kind,
            AuthRequest.used_at.is_(None),
            AuthRequest.expires_at > now,
        )
        .values(used_at=now),
    )
    request = await db.scalar(
        select(AuthRequest)
        .where(AuthRequest.state_hash == digest)
        .execution_options(populate_existing=True)
    )
    if request is None or request.kind != kind:
        raise StateError("unknown")
    if changed != 1:
        raise StateError("expired" if request.used_at is None else "used")
    return request


@dataclass(frozen=True)
class RequestName:
    """The first-login name of one sign-in request."""

    first_name: str | None
    last_name: str | None


def kept_name(request: AuthRequest, code: str) -> RequestName | None:
    """The name kept with ``request`` by an earlier attempt that failed for a transient reason,
    if this attempt brings the same code."""
    if request.name_code_hash is None or not constant_time_equal(
        request.name_code_hash, hash_token(code)
    ):
        return None
    return RequestName(request.first_name, request.last_name)


async def release_auth_request(
    *, db: DbSession, state: str, code: str, name: RequestName | None
) -> None:
    """Make the request of ``state`` usable again, until it expires as before: its code
    exchange failed for a transient reason. A name that came with ``code`` stays with it."""
    values: dict[str, Any] = {"used_at": None}
    if name is not None and (name.first_name or name.last_name):
        values.update(
            first_name=name.first_name, last_name=name.last_name, name_code_hash=hash_token(code)
        )
    await db.execute(
        update(AuthRequest)
        .where(AuthRequest.state_hash == hash_token(state), AuthRequest.handoff_hash.is_(None))
        .values(**values)
    )


async def set_handoff(
    *, db: DbSession, request: AuthRequest, user_id: int, max_age: int, now: datetime | None = None
) -> str:
    """Attach a one-time token that the GET finishing a web sign-in exchanges for a session;
    the request now lives ``max_age`` seconds more, for that GET only."""
    raw = new_token(HANDOFF_PREFIX)
    request.handoff_hash = hash_token(raw)
    request.user_id = user_id
    request.expires_at = (now or utcnow()) + timedelta(seconds=max_age)
    await db.flush()
    return raw


@dataclass(frozen=True)
class Handoff:
    user_id: int
    next_path: str
    browser_hash: str


class HandoffRefused(Exception):
    """A finishing link that cannot be used here; ``reason`` is "unknown" (used, expired or
    never issued) or "other_browser" (valid, but this browser did not start the sign-in)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


async def consume_handoff(
    *, db: DbSession, raw: str, browser_secrets: Sequence[str], now: datetime | None = None
) -> Handoff:
    """Finish a web sign-in: delete its request and return the user, if ``raw`` is its live
    finishing token and one of ``browser_secrets`` (the sign-in cookies the browser sent) is
    the one it was started with. A refusal leaves the request as it was."""
    now = now or utcnow()
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        raise HandoffRefused("unknown")
    digest = hash_token(raw)
    hashes = [hash_token(s) for s in browser_secrets if 0 < len(s) <= MAX_TOKEN_LENGTH]
    row = (
        await db.execute(
            delete(AuthRequest)
            .where(
                AuthRequest.handoff_hash == digest,
                AuthRequest.expires_at > now,
                AuthRequest.user_id.is_not(None),
                AuthRequest.browser_hash.in_(hashes),
            )
            .returning(AuthRequest.user_id, AuthRequest.next_path, AuthRequest.browser_hash)
        )
    ).first()
    if row is not None:
        user_id, next_path, browser_hash = row
        assert user_id is not None  # the WHERE above
        assert browser_hash is not None
        return Handoff(user_id=user_id, next_path=next_path, browser_hash=browser_hash)
    live = await db.scalar(
        select(AuthRequest.id).where(
            AuthRequest.handoff_hash == digest, AuthRequest.expires_at > now
        )
    )
    raise HandoffRefused("unknown" if live is None else "other_browser")


async def purge_expired(*, db: DbSession, now: datetime | None = None) -> None:
    """Delete expired sign-in requests, sessions and login links (housekeeping)."""
    now = now or utcnow()
    day = timedelta(days=1)
    await db.execute(delete(AuthRequest).where(AuthRequest.expires_at <= now))
    await db.execute(delete(Session).where(Session.expires_at < now))
    await db.execute(delete(AdminLoginToken).where(AdminLoginToken.expires_at < now - day))
    await db.execute(delete(PendingName).where(PendingName.created_at < now - 7 * day))
    # Windows are at most a day long, so a counter older than two days is dead.
    stale = int(now.timestamp()) - 2 * 86_400
    await db.execute(delete(RateLimitCounter).where(RateLimitCounter.window_start < stale))


# --- rate limits ------------------------------------------------------------------------------


async def count_hit(
    *, db: DbSession, bucket: str, window_start: int, hits: int = 1
) -> tuple[int, int]:
    """Count ``hits`` requests in ``bucket`` for the window starting at ``window_start`` (Unix
    seconds); return ``(hits, window_start)`` of the bucket's current window, these included.

    One ``INSERT .. ON CONFLICT DO UPDATE .. RETURNING``: the row lock makes concurrent hits
    from any number of processes count exactly. A later window restarts the count; hits
    stamped with an earlier window (a process whose clock lags) count in the current one.
    """
    table = RateLimitCounter
    stmt = _insert(db, table).values(bucket=bucket, window_start=window_start, hits=hits)
    newer = stmt.excluded.window_start > table.window_start
    stmt = stmt.on_conflict_do_update(
        index_elements=["bucket"],
        set_={
            "hits": case((newer, stmt.excluded.hits), else_=table.hits + stmt.excluded.hits),
            "window_start": case((newer, stmt.excluded.window_start), else_=table.window_start),
        },
    ).returning(table.hits, table.window_start)
    row = (await db.execute(stmt)).one()
    return int(row[0]), int(row[1])


# --- users ------------------------------------------------------------------------------------


def _insert(db: DbSession, table: Any) -> Any:
    dialect = db.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


async def save_pending_name(
    *, db: DbSession, sub: str, first_name: str | None, last_name: str | None
) -> None:
    """Keep the first-login name by ``sub`` until the sign-in completes (upsert, non-empty)."""
    if not (first_name or last_name):
        return
    stmt = _insert(db, PendingName).values(
        sub=sub, first_name=first_name, last_name=last_name, created_at=utcnow()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["sub"],
        set_={"first_name": first_name, "last_name": last_name, "created_at": utcnow()},
    )
    await db.execute(stmt)


@dataclass(frozen=True)
class Identity:
    """What the service keeps from a verified identity token."""

    sub: str
    email: str | None
    email_verified: bool
    is_private_email: bool
    transfer_sub: str | None
    claims: Mapping[str, Any]


_USERS = table_of(User)
_NO_NAME = and_(_USERS.c.first_name.is_(None), _USERS.c.last_name.is_(None))
_TAKE_PENDING_NAME = (
    delete(PendingName)
    .where(PendingName.sub == bindparam("sub"))
    .returning(PendingName.first_name, PendingName.last_name)
)
_INSERT: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _take_pending_name(conn: Connection, sub: str) -> tuple[str | None, str | None]:
    """Remove the first-login name kept for ``sub`` (if any) and return it."""
    row = conn.execute(_TAKE_PENDING_NAME, {"sub": sub}).first()
    return (row.first_name, row.last_name) if row is not None else (None, None)


def _returning_user(row: Any) -> User:
    """A detached ``User`` from a ``RETURNING`` row of every column."""
    return User(**row._asdict())


@functools.cache
def _user_insert(dialect: str) -> Any:
    """``INSERT .. ON CONFLICT (sub) DO NOTHING RETURNING *``, built once per dialect; the
    values come with the call."""
    return (
        _INSERT[dialect](_USERS)
        .on_conflict_do_nothing(index_elements=["sub"])
        .returning(*_USERS.columns)
    )


def _param(name: str) -> Any:
    """A parameter for a column of ``users``, typed as the column is."""
    return bindparam(f"p_{name}", type_=_USERS.c[name].type)


@functools.cache
def _user_update(email: bool, transfer_sub: bool, name: bool) -> Any:
    """The returning user's ``UPDATE .. RETURNING *``, one statement per shape, built once.

    The email is replaced only when the token has one (Apple sends it on every sign-in but may
    not), ``transfer_sub`` only when present, and a name only where the account has none.
    """
    values: dict[str, Any] = {c: _param(c) for c in ("client_id", "last_claims", "last_sign_in_at")}
    if email:
        values.update({c: _param(c) for c in ("email", "email_verified", "is_private_email")})
    if transfer_sub:
        values["transfer_sub"] = _param("transfer_sub")
    if name:
        values["first_name"] = case((_NO_NAME, _param("first_name")), else_=_USERS.c.first_name)
        values["last_name"] = case((_NO_NAME, _param("last_name")), else_=_USERS.c.last_name)
    return (
        update(_USERS)
        .where(_USERS.c.sub == bindparam("match_sub"))
        .values(values)
        .returning(*_USERS.columns)
    )


def upsert_user(
    *,
    conn: Connection,
    identity: Identity,
    client_id: str,
    default_role: str,
    first_name: str | None,
    last_name: str | None,
    now: datetime | None = None,
) -> tuple[User, bool]:
    """Find or create the user of ``identity.sub``; returns ``(user, created)``, the user a
    detached copy of the row as written.

    A returning user (the common case) is one ``UPDATE .. RETURNING``; a new one, then
    ``INSERT .. ON CONFLICT DO NOTHING RETURNING``, which makes two concurrent first sign-ins
    of one Apple ID create one user (the other updates it). A name is
    set only where the account has none (never overwritten, never emptied); a pending name
    saved earlier for this ``sub`` is used when none came now (and removed either way).
    Statements are built once (:func:`_user_insert`, :func:`_user_update`).
    """
    now = now or utcnow()
    if identity.transfer_sub:
        relink_transferred_user(
            conn=conn, transfer_sub=identity.transfer_sub, new_sub=identity.sub, via="sign-in"
        )
    pending = _take_pending_name(conn, identity.sub)
    if not (first_name or last_name):
        first_name, last_name = pending
    claims = json.dumps(dict(identity.claims))
    row = {
        "sub": identity.sub,
        "transfer_sub": identity.transfer_sub,
        "email": identity.email,
        "email_verified": identity.email_verified,
        "is_private_email": identity.is_private_email,
        "email_forwarding": True,
        "email_undeliverable": False,
        "email_bounces": 0,
        "first_name": first_name,
        "last_name": last_name,
        "role": default_role,
        "client_id": client_id,
        "last_claims": claims,
        "created_at": now,
        "last_sign_in_at": now,
    }
    has_name = bool(first_name or last_name)
    update_user = _user_update(bool(identity.email), bool(identity.transfer_sub), has_name)
    params = {f"p_{k}": v for k, v in row.items()}
    params["match_sub"] = identity.sub
    # A returning user, the common case, first: one statement (one round trip) for them.
    updated = conn.execute(update_user, params).first()
    if updated is not None:
        return _returning_user(updated), False
    inserted = conn.execute(_user_insert(conn.dialect.name), row).first()
    if inserted is not None:
        return _returning_user(inserted), True
    # A concurrent first sign-in of the same Apple ID created the user in between.
    return _returning_user(conn.execute(update_user, params).one()), False


def relink_transferred_user(*, conn: Connection, transfer_sub: str, new_sub: str, via: str) -> bool:
    """Re-key the user exported with ``transfer_sub`` to the recipient team's ``new_sub``.

    After an app transfer (TN3159) the recipient team sees the user under a new ``sub``; the
    sending team stored the ``transfer_sub`` that links the two (``users migrate export``),
    and Apple puts it in the recipient's id_tokens for 60 days. ``False`` when no user needs
    re-keying, or when an account with ``new_sub`` already exists (never merged silently).
    """
    old_sub = conn.execute(
        select(_USERS.c.sub)
        .where(_USERS.c.transfer_sub == transfer_sub, _USERS.c.sub != new_sub)
        .limit(1)
    ).scalar()
    if old_sub is None:
        return False
    other = _USERS.alias("other")
    changed = conn.execute(
        update(_USERS)
        .where(
            _USERS.c.transfer_sub == transfer_sub,
            _USERS.c.sub == old_sub,
            ~exists().where(other.c.sub == new_sub),
        )
        .values(sub=new_sub)
    ).rowcount
    if changed != 1:
        return False
    record_audit(
        conn=conn,
        event="user.migrated",
        actor="apple" if via == "sign-in" else "cli",
        sub=new_sub,
        detail={"from_sub": old_sub, "transfer_sub": transfer_sub, "via": via},
    )
    return True


async def find_user(*, db: DbSession, ref: str) -> User | None:
    """A user by id, ``sub``, ``transfer_sub`` or email (for the command line)."""
    clauses = [User.sub == ref, User.transfer_sub == ref, func.lower(User.email) == ref.lower()]
    if ref.isdigit():
        clauses.append(User.id == int(ref))
    return (await db.scalars(select(User).where(or_(*clauses)).limit(2))).first()


async def list_users(*, db: DbSession, limit: int = 100, offset: int = 0) -> Sequence[User]:
    return (await db.scalars(select(User).order_by(User.id).limit(limit).offset(offset))).all()


async def count_users(*, db: DbSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(User)) or 0)


async def search_users(*, db: DbSession, q: str = "", limit: int = 100) -> Sequence[User]:
    """The newest users first; with ``q``, those whose email or name contains it (any case)
    or whose ``sub`` is ``q``."""
    query = select(User).order_by(User.id.desc()).limit(limit)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        full_name = func.coalesce(User.first_name, "") + " " + func.coalesce(User.last_name, "")
        query = query.where(
            or_(
                User.email.ilike(pattern, escape="\\"),
                User.first_name.ilike(pattern, escape="\\"),
                User.last_name.ilike(pattern, escape="\\"),
                full_name.ilike(pattern, escape="\\"),
                User.sub == q,
            )
        )
    return (await db.scalars(query)).all()


async def set_user_role(*, db: DbSession, user_id: int, role: str) -> tuple[User, str] | None:
    """Give the user ``role``; returns the user and the role they had, or ``None`` if there is
    no such user."""
    user = await db.get(User, user_id)
    if user is None:
        return None
    old, user.role = user.role, role
    return user, old


TOKEN_VALUES = ("refresh_token_encrypted", "refresh_token_hash", "validated_at")


@functools.cache
def token_upsert(dialect: str) -> Any:
    """Insert the refresh token of (user, client), or replace the one stored; built once."""
    statement = _INSERT[dialect](table_of(AppleToken))
    return statement.on_conflict_do_update(
        index_elements=["user_id", "client_id"],
        set_={c: statement.excluded[c] for c in TOKEN_VALUES},
    )


def refresh_token_values(
    *,
    encryptor: Encryptor,
    user_id: int,
    client_id: str,
    refresh_token: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The row keeping the user's refresh token for ``client_id``: encrypted, with its hash to
    find it (:func:`token_upsert` inserts it or replaces the one stored)."""
    now = now or utcnow()
    return {
        "user_id": user_id,
        "client_id": client_id,
        "created_at": now,
        "refresh_token_encrypted": encryptor.encrypt(refresh_token),
        "refresh_token_hash": hash_token(refresh_token),
        "validated_at": now,
    }


async def find_refresh_token(*, db: DbSession, refresh_token: str) -> AppleToken | None:
    if not refresh_token or len(refresh_token) > 1024:
        return None
    return await db.scalar(
        select(AppleToken).where(AppleToken.refresh_token_hash == hash_token(refresh_token))
    )


async def user_refresh_tokens(
    *, db: DbSession, encryptor: Encryptor, user_id: int
) -> list[tuple[str, str]]:
    """``(client_id, refresh_token)`` pairs stored for a user, decrypted."""
    rows = await db.scalars(select(AppleToken).where(AppleToken.user_id == user_id))
    return [(r.client_id, encryptor.decrypt(r.refresh_token_encrypted)) for r in rows]


async def drop_apple_tokens(*, db: DbSession, user_id: int) -> int:
    return await _rows_changed(db, delete(AppleToken).where(AppleToken.user_id == user_id))


async def delete_user_data(*, db: DbSession, user: User) -> None:
    """Delete a user and everything keyed to them (sessions and tokens cascade)."""
    await db.execute(delete(Session).where(Session.user_id == user.id))
    await db.execute(delete(AppleToken).where(AppleToken.user_id == user.id))
    await db.execute(delete(AuthRequest).where(AuthRequest.user_id == user.id))
    await db.execute(delete(PendingName).where(PendingName.sub == user.sub))
    if user.email:
        await db.execute(delete(OutboxMail).where(OutboxMail.to_address == user.email))
    await db.delete(user)


async def user_by_sub(*, db: DbSession, sub: str) -> User | None:
    return await db.scalar(select(User).where(User.sub == sub))


# --- notifications, audit, admin links ---------------------------------------------------------


async def first_sight_of_jti(*, db: DbSession, jti: str, now: datetime | None = None) -> bool:
    """Record a notification ``jti``; ``False`` when it was already seen (a duplicate)."""
    stmt = (
        _insert(db, NotificationSeen)
        .values(jti=jti, received_at=now or utcnow())
        .on_conflict_do_nothing(index_elements=["jti"])
        .returning(NotificationSeen.jti)
    )
    return (await db.scalar(stmt)) is not None


AUDIT_INSERT = insert(table_of(AuditEvent))


def audit_values(
    *,
    event: str,
    actor: str,
    sub: str | None = None,
    detail: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """An audit-log row."""
    return {
        "at": now or utcnow(),
        "event": event,
        "actor": actor,
        "sub": sub,
        "detail": json.dumps(dict(detail or {}), default=str),
    }


def record_audit(
    *,
    conn: Connection,
    event: str,
    actor: str,
    sub: str | None = None,
    detail: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Record an event in the audit log (one INSERT, in the caller's transaction)."""
    values = audit_values(event=event, actor=actor, sub=sub, detail=detail, now=now)
    conn.execute(AUDIT_INSERT, values)


async def audit(
    *,
    db: DbSession,
    event: str,
    actor: str,
    sub: str | None = None,
    detail: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """:func:`record_audit` in the transaction of ``db``."""
    await db.run_sync(
        lambda s: record_audit(
            conn=s.connection(), event=event, actor=actor, sub=sub, detail=detail, now=now
        )
    )


async def audit_events(*, db: DbSession, sub: str | None = None) -> Sequence[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id)
    if sub is not None:
        query = query.where(AuditEvent.sub == sub)
    return (await db.scalars(query)).all()


async def recent_audit_events(
    *,
    db: DbSession,
    sub: str | None = None,
    actor: str | None = None,
    events: Sequence[str] | None = None,
    limit: int = 200,
) -> Sequence[AuditEvent]:
    """The newest audit events first, optionally of one ``sub``, one actor, or some events."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if sub is not None:
        query = query.where(AuditEvent.sub == sub)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if events is not None:
        query = query.where(AuditEvent.event.in_(events))
    return (await db.scalars(query)).all()


def _mail_due(now: datetime) -> ColumnElement[bool]:
    """A mail a process may claim now: pending and due, or sending with an expired lease."""
    return or_(
        and_(
            OutboxMail.status == "pending",
            or_(OutboxMail.next_attempt_at.is_(None), OutboxMail.next_attempt_at <= now),
        ),
        and_(
            OutboxMail.status == "sending",
            or_(OutboxMail.claimed_until.is_(None), OutboxMail.claimed_until <= now),
        ),
    )


async def due_mail_ids(*, db: DbSession, now: datetime, limit: int) -> Sequence[int]:
    """The oldest mails that may be claimed at ``now``."""
    query = select(OutboxMail.id).where(_mail_due(now)).order_by(OutboxMail.id).limit(limit)
    return (await db.scalars(query)).all()


async def next_mail_due(*, db: DbSession) -> datetime | None:
    """The earliest time a pending mail is due or a lease expires (None: nothing waits)."""
    pending = await db.scalar(
        select(func.min(OutboxMail.next_attempt_at)).where(OutboxMail.status == "pending")
    )
    leased = await db.scalar(
        select(func.min(OutboxMail.claimed_until)).where(OutboxMail.status == "sending")
    )
    times = [t for t in (pending, leased) if t is not None]
    return min(times) if times else None


async def claim_mail(
    *, db: DbSession, mail_id: int, claim: str, now: datetime, lease: float
) -> bool:
    """Mark a due mail ``sending`` under ``claim`` until ``now + lease`` and count the attempt;
    ``False`` when it is not due (another process claimed it first: the conditional UPDATE is
    the lock)."""
    claimed = await _rows_changed(
        db,
        update(OutboxMail)
        .where(OutboxMail.id == mail_id, _mail_due(now))
        .values(
            status="sending",
            claim=claim,
            claimed_until=now + timedelta(seconds=lease),
            attempts=OutboxMail.attempts + 1,
        ),
    )
    return claimed == 1


async def finish_mail(*, db: DbSession, mail_id: int, claim: str, **values: object) -> bool:
    """Record the outcome of an attempt, only if ``claim`` still holds the mail."""
    changed = await _rows_changed(
        db,
        update(OutboxMail)
        .where(OutboxMail.id == mail_id, OutboxMail.claim == claim)
        .values(claim=None, claimed_until=None, **values),
    )
    return changed == 1


_NOT_SENT = ("pending", "failed", "outbox")


async def retry_mail(*, db: DbSession, mail_id: int) -> bool:
    """Make a pending, failed or unsent (``outbox``) mail due now, its attempts from zero;
    ``False`` when it is being sent, was sent or discarded, or does not exist."""
    changed = await _rows_changed(
        db,
        update(OutboxMail)
        .where(OutboxMail.id == mail_id, OutboxMail.status.in_(_NOT_SENT))
        .values(status="pending", next_attempt_at=None, attempts=0, error=None),
    )
    return changed == 1


async def discard_mail(*, db: DbSession, mail_id: int) -> bool:
    """Never send a pending, failed or unsent mail (kept as ``discarded``)."""
    changed = await _rows_changed(
        db,
        update(OutboxMail)
        .where(OutboxMail.id == mail_id, OutboxMail.status.in_(_NOT_SENT))
        .values(status="discarded", next_attempt_at=None),
    )
    return changed == 1


async def recent_mails(*, db: DbSession, limit: int = 200) -> Sequence[OutboxMail]:
    """The newest outgoing emails first (sent, waiting or failed)."""
    return (await db.scalars(select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit))).all()


async def create_admin_login(*, db: DbSession, ttl: int, now: datetime | None = None) -> str:
    now = now or utcnow()
    raw = new_token(LOGIN_PREFIX)
    db.add(
        AdminLoginToken(
            token_hash=hash_token(raw), created_at=now, expires_at=now + timedelta(seconds=ttl)
        )
    )
    await db.flush()
    return raw


async def consume_admin_login(*, db: DbSession, raw: str, now: datetime | None = None) -> bool:
    """Use a one-time admin login link; ``True`` exactly once, before it expires."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return False
    now = now or utcnow()
    return (
        await _rows_changed(
            db,
            update(AdminLoginToken)
            .where(
                AdminLoginToken.token_hash == hash_token(raw),
                AdminLoginToken.used_at.is_(None),
                AdminLoginToken.expires_at > now,
            )
            .values(used_at=now),
        )
        == 1
    )


async def admin_login_link(
    *, db: DbSession, raw: str, now: datetime | None = None
) -> tuple[str, timedelta]:
    """What a one-time admin login link is now, without using it: ``"usable"``, ``"used"``,
    ``"expired"`` or ``"unknown"`` (never made here, cut short, or purged a day after expiry);
    and how long the link was made to work (zero when unknown): the settings' lifetime may
    have changed since."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return "unknown", timedelta(0)
    row = await db.get(AdminLoginToken, hash_token(raw))
    if row is None:
        return "unknown", timedelta(0)
    lifetime = row.expires_at - row.created_at
    if row.used_at is not None:
        return "used", lifetime
    return ("usable" if row.expires_at > (now or utcnow()) else "expired"), lifetime


async def save_setting(
    *, db: DbSession, encryptor: Encryptor, key: str, value: str, secret: bool
) -> None:
    """Store a run-time setting; ``secret`` values (a pasted .p8 key) are encrypted."""
    stored = encryptor.encrypt(value) if secret else value
    row = await db.get(SettingValue, key)
    if row is None:
        db.add(SettingValue(key=key, value=stored, encrypted=secret, updated_at=utcnow()))
    else:
        row.value, row.encrypted, row.updated_at = stored, secret, utcnow()


async def load_setting(*, db: DbSession, encryptor: Encryptor, key: str) -> str | None:
    row = await db.get(SettingValue, key)
    if row is None:
        return None
    return encryptor.decrypt(row.value) if row.encrypted else row.value
