"""Where the integrations keep their state: the :class:`SignInStore` protocol and an in-memory
implementation.

Everything a sign-in needs across requests lives here, never in a cookie alone: the requests in
progress (single use, by ``state``), the verified callbacks waiting for their browser, the
accounts, the sessions (by the SHA-256 of their token) and the ``jti`` of notifications already
applied. Run several processes? Implement the protocol over your database; the in-memory store
is for one process (tests, demos).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

from ._records import AppleAccount, CompletedSignIn, PendingSignIn

MAX_PENDING = 10_000
"""At most this many sign-ins in progress (and as many waiting to finish) in memory."""
MAX_SEEN_NOTIFICATIONS = 10_000


class SignInStore(Protocol):
    """What :class:`~appleconnect.integrations.AppleSignIn` stores. Every method is atomic."""

    def put_pending(self, state: str, pending: PendingSignIn) -> None: ...
    def take_pending(self, state: str) -> PendingSignIn | None: ...
    def put_completed(self, token: str, completed: CompletedSignIn) -> None: ...
    def take_completed(self, token: str) -> CompletedSignIn | None: ...
    def get_account(self, sub: str) -> AppleAccount | None: ...
    def save_account(self, account: AppleAccount) -> None: ...
    def delete_account(self, sub: str) -> None: ...
    def create_session(self, token_hash: str, sub: str, expires_at: float) -> None: ...
    def session_sub(self, token_hash: str, now: float) -> str | None: ...
    def end_session(self, token_hash: str) -> None: ...
    def end_sessions_of(self, sub: str) -> None: ...
    def first_time_seen(self, jti: str) -> bool: ...


class MemoryStore:
    """A :class:`SignInStore` in this process's memory (thread-safe, bounded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, PendingSignIn] = OrderedDict()
        self._completed: OrderedDict[str, CompletedSignIn] = OrderedDict()
        self._accounts: dict[str, AppleAccount] = {}
        self._sessions: dict[str, tuple[str, float]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()

    def put_pending(self, state: str, pending: PendingSignIn) -> None:
        with self._lock:
            self._pending[state] = pending
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def take_pending(self, state: str) -> PendingSignIn | None:
        with self._lock:
            return self._pending.pop(state, None)

    def put_completed(self, token: str, completed: CompletedSignIn) -> None:
        with self._lock:
            self._completed[token] = completed
            while len(self._completed) > MAX_PENDING:
                self._completed.popitem(last=False)

    def take_completed(self, token: str) -> CompletedSignIn | None:
        with self._lock:
            return self._completed.pop(token, None)

    def get_account(self, sub: str) -> AppleAccount | None:
        with self._lock:
            return self._accounts.get(sub)

    def save_account(self, account: AppleAccount) -> None:
        with self._lock:
            self._accounts[account.sub] = account

    def delete_account(self, sub: str) -> None:
        with self._lock:
            self._accounts.pop(sub, None)

    def create_session(self, token_hash: str, sub: str, expires_at: float) -> None:
        with self._lock:
            self._sessions[token_hash] = (sub, expires_at)

    def session_sub(self, token_hash: str, now: float) -> str | None:
        with self._lock:
            found = self._sessions.get(token_hash)
            if found is None or found[1] <= now:
                return None
            return found[0]

    def end_session(self, token_hash: str) -> None:
        with self._lock:
            self._sessions.pop(token_hash, None)

    def end_sessions_of(self, sub: str) -> None:
        with self._lock:
            for key in [k for k, (s, _) in self._sessions.items() if s == sub]:
                del self._sessions[key]

    def first_time_seen(self, jti: str) -> bool:
        with self._lock:
            if jti in self._seen:
                return False
            self._seen[jti] = None
            while len(self._seen) > MAX_SEEN_NOTIFICATIONS:
                self._seen.popitem(last=False)
            return True
