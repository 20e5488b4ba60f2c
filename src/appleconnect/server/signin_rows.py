"""What a sign-in writes after its user, in as few statements as the database allows.

After the user's row, a sign-in writes the audit entry and, as the case may be, the refresh
token (inserted, or replacing the one stored for the user and client), the session and the
welcome mail. On PostgreSQL these are one statement: the others as data-modifying CTEs of the
audit row's ``INSERT`` (``WITH token AS (INSERT … ON CONFLICT …), session AS (INSERT …) INSERT
INTO audit_log …``), so one round trip instead of up to four; each of the eight shapes is built
once. SQLite has no data-modifying CTEs, and its statements cost no round trip: there they run
one after the other. Either way they are in the caller's transaction (:mod:`.writes`).
docs/performance.md#sqlite-writes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert

from . import store
from .mail import OUTBOX_INSERT
from .models import AppleToken, AuditEvent, OutboxMail, Session, table_of

__all__ = ["SignInRows", "write_sign_in_rows"]

_AUDIT = ("at", "event", "actor", "sub", "detail")
_TOKEN = ("user_id", "client_id", "created_at", *store.TOKEN_VALUES)
_SESSION = ("token_hash", "user_id", "created_at", "expires_at")
_MAIL = ("to_address", "subject", "body", "created_at", "status", "attempts")


@dataclass
class SignInRows:
    """The column values of the rows a sign-in writes after its user."""

    audit: dict[str, Any]
    token: dict[str, Any] | None = None
    session: dict[str, Any] | None = None
    mail: dict[str, Any] | None = None


def write_sign_in_rows(conn: Connection, rows: SignInRows) -> None:
    """Insert ``rows`` in the transaction of ``conn``."""
    if conn.dialect.name == "postgresql":
        shape = (rows.token is not None, rows.session is not None, rows.mail is not None)
        params = _prefixed("a_", rows.audit)
        for prefix, values in (("t_", rows.token), ("s_", rows.session), ("m_", rows.mail)):
            if values is not None:
                params.update(_prefixed(prefix, values))
        conn.execute(_one_statement(*shape), params)
        return
    if rows.token is not None:
        conn.execute(store.token_upsert(conn.dialect.name), rows.token)
    if rows.session is not None:
        conn.execute(store.SESSION_INSERT, rows.session)
    conn.execute(store.AUDIT_INSERT, rows.audit)
    if rows.mail is not None:
        conn.execute(OUTBOX_INSERT, rows.mail)


@functools.cache
def _one_statement(token: bool, session: bool, mail: bool) -> Any:
    """PostgreSQL: the audit row's ``INSERT`` carrying the other rows as CTEs."""
    statement = insert(table_of(AuditEvent)).values(_params(AuditEvent, "a_", _AUDIT))
    if token:
        upsert = store.token_upsert("postgresql").values(_params(AppleToken, "t_", _TOKEN))
        statement = statement.add_cte(upsert.cte("token_row"))
    if session:
        opened = insert(table_of(Session)).values(_params(Session, "s_", _SESSION))
        statement = statement.add_cte(opened.cte("session_row"))
    if mail:
        queued = insert(table_of(OutboxMail)).values(_params(OutboxMail, "m_", _MAIL))
        statement = statement.add_cte(queued.cte("mail_row"))
    return statement


def _params(model: Any, prefix: str, columns: tuple[str, ...]) -> dict[str, Any]:
    table = table_of(model)
    return {c: bindparam(prefix + c, type_=table.c[c].type) for c in columns}


def _prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {prefix + key: value for key, value in values.items()}
