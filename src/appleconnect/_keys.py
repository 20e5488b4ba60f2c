"""Apple's signing keys (the JWKS at ``/auth/keys``), cached and refreshed safely.

Apple publishes several RS256 keys and rotates them without notice
(docs/apple-protocol.md#quirk-keys-rotate). The cache follows the pattern that
docs/pitfalls.md#pitfall-key-rotation describes:

- keys are kept for ``ttl`` seconds, then re-fetched on the next use;
- a token naming an unknown ``kid`` triggers one re-fetch, but at most one per
  ``refetch_interval`` seconds, so random ``kid``\\s cannot make us hammer Apple (go-oidc PR #482);
- concurrent misses share one fetch (a lock per sync and per async path);
- when Apple cannot be reached, the last good key set keeps serving for ``max_stale`` seconds
  past its ``ttl`` (stale-if-error), for the ``kid``\\s it holds;
- a token naming a ``kid`` the cached set lacks, while the set could not be fetched, raises
  :class:`~appleconnect.KeysUnavailable` (Apple may have rotated during the outage: the token is
  undecidable, not invalid); after a failed fetch, such a token may trigger another fetch once
  ``failure_backoff`` seconds have passed, so verification recovers within seconds of Apple.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from ._constants import APPLE_BASE_URL, KEYS_PATH
from ._errors import KeysUnavailable
from ._jws import b64url_decode

__all__ = ["AppleKeys", "parse_jwks"]

logger = logging.getLogger(__name__)

_ACCEPT_JSON = {"Accept": "application/json"}

MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100
MIN_RSA_BITS = 2048


def parse_jwks(jwks: object) -> dict[str, RSAPublicKey]:
    """Turn a JWKS document into ``{kid: public key}``; raise ValueError if it holds no usable key.

    Keys that are not RSA signing keys for RS256 are skipped, as RFC 7517 allows; a set with
    none left is an error. Any number of keys and any ``kid`` length are accepted.
    """
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise ValueError("A JWKS must be a JSON object with a 'keys' list.")
    entries = jwks["keys"]
    if len(entries) > MAX_KEYS:
        raise ValueError(f"The JWKS has {len(entries)} keys; more than {MAX_KEYS} is refused.")
    keys: dict[str, RSAPublicKey] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("kty") != "RSA":
            continue
        if entry.get("alg", "RS256") != "RS256" or entry.get("use", "sig") != "sig":
            continue
        kid, n, e = entry.get("kid"), entry.get("n"), entry.get("e")
        if not (isinstance(kid, str) and kid and len(kid) <= 256):
            continue
        if not (isinstance(n, str) and isinstance(e, str) and len(n) <= 2048 and len(e) <= 16):
            continue
        try:
            modulus = int.from_bytes(b64url_decode(n), "big")
            exponent = int.from_bytes(b64url_decode(e), "big")
            key = RSAPublicNumbers(exponent, modulus).public_key()
        except ValueError:
            continue
        if key.key_size < MIN_RSA_BITS:
            continue
        keys[kid] = key
    if not keys:
        raise ValueError("The JWKS holds no RSA signing key usable for RS256.")
    return keys


class AppleKeys:
    """Apple's public keys, fetched from ``<base_url>/auth/keys`` and cached.

    Pass an ``httpx.Client`` (sync use) and/or an ``httpx.AsyncClient`` (async use); when one is
    missing, the object creates its own on first use and closes it in :meth:`close` /
    :meth:`aclose`. :meth:`from_jwks` builds a fixed set that never fetches (tests, offline use).
    """

    def __init__(
        self,
        *,
        base_url: str = APPLE_BASE_URL,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        ttl: float = 3600.0,
        refetch_interval: float = 60.0,
        max_stale: float = 86_400.0,
        failure_backoff: float = 5.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or refetch_interval < 0 or max_stale < 0 or failure_backoff < 0:
            raise ValueError(
                "ttl must be positive; refetch_interval, max_stale and failure_backoff must not "
                "be negative."
            )
        self._url = base_url.rstrip("/") + KEYS_PATH
        self._http = http_client
        self._ahttp = async_http_client
        self._owns_http = http_client is None
        self._owns_ahttp = async_http_client is None
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._max_stale = max_stale
        self._failure_backoff = failure_backoff
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, RSAPublicKey] = {}
        self._fetched_at: float | None = None
        # Until when (on the clock) the current set may be used without asking _decide: the
        # hot path of every verification is a known kid in a fresh set.
        self._fresh_until = -math.inf
        # When the last fetch failed (None: it succeeded, or there was none).
        self._failed_at: float | None = None
        self._generation = 0
        self._fixed = False
        self._lock = threading.Lock()
        self._alock: asyncio.Lock | None = None
        self.fetch_count = 0
        """How many times the key set was requested from Apple (for tests and benchmarks)."""

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> AppleKeys:
        """A fixed key set built from a JWKS document; it never fetches anything."""
        keys = cls()
        keys._keys = parse_jwks(jwks)
        keys._fixed = True
        keys._fresh_until = math.inf
        return keys

    @property
    def kids(self) -> tuple[str, ...]:
        """The ``kid``\\s currently known (possibly none before the first fetch)."""
        return tuple(self._keys)

    # -- lookup -------------------------------------------------------------------------------

    def _decide(self, kid: str) -> tuple[RSAPublicKey | None, bool]:
        """Return ``(key, must_fetch)`` for the current cache state, without fetching.

        Raises :class:`KeysUnavailable` when the last fetch failed, the cache cannot answer for
        ``kid``, and the backoff after that failure has not passed.
        """
        key = self._keys.get(kid)
        if self._fixed:
            return key, False
        now = self._clock()
        failed_at = self._failed_at
        if failed_at is None:  # the last fetch succeeded (or there was none)
            if now >= self._fresh_until:
                return key, True
            if key is not None:
                return key, False
            # Unknown kid while the set is fresh: Apple may have rotated; fetch at most once per
            # refetch_interval, whatever the kids that attackers send.
            assert self._fetched_at is not None
            return None, now - self._fetched_at >= self._refetch_interval
        if key is not None and self._serving_stale(now):
            # Stale-if-error for a kid the set holds: no hurry, retry once per refetch_interval.
            return key, now >= self._fresh_until and now - failed_at >= self._refetch_interval
        waited = now - failed_at
        if waited >= self._failure_backoff:
            return key, True
        raise self._unavailable(kid, f"the last fetch failed {waited:.1f} s ago", waited)

    def _serving_stale(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._ttl + self._max_stale

    def _unavailable(self, kid: str, why: object, waited: float = 0.0) -> KeysUnavailable:
        retry_after = max(self._failure_backoff - waited, 0.0)
        return KeysUnavailable(
            f"Apple's signing keys could not be fetched from {self._url} ({why}), and the cached "
            f"set has no usable key {kid!r}: the token can be neither accepted nor refused now; "
            f"retry in {retry_after:.0f} s.",
            kid=kid,
            retry_after=retry_after,
        )

    def _after_failure(self, kid: str, exc: Exception) -> RSAPublicKey | None:
        key = self._keys.get(kid)
        if key is not None and self._serving_stale(self._clock()):
            logger.warning("Apple's keys could not be refreshed (%s); serving the cached set.", exc)
            return key
        raise self._unavailable(kid, exc) from exc

    def _install(self, body: bytes) -> None:
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("the key set is larger than any Apple publishes")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the stack
            raise ValueError("the key set is not JSON") from None
        self._keys = parse_jwks(document)
        self._fetched_at = self._clock()
        self._fresh_until = self._fetched_at + self._ttl
        self._failed_at = None
        self._generation += 1

    def cached(self, kid: str) -> RSAPublicKey | None:
        """The key for ``kid`` if the cached set has it and is still fresh, else ``None``.

        Never fetches and never blocks; :meth:`get` / :meth:`aget` decide what to do otherwise.
        """
        key = self._keys.get(kid)
        if key is not None and self._clock() < self._fresh_until:
            return key
        return None

    def get(self, kid: str) -> RSAPublicKey | None:
        """The key for ``kid``, fetching (synchronously) if the cache rules call for it.

        Returns ``None`` for a ``kid`` that is still unknown after a successful fetch. Raises
        :class:`~appleconnect.KeysUnavailable` (an :class:`~appleconnect.AppleUnavailable`)
        when the cache cannot answer for ``kid`` because the key set could not be fetched.
        """
        key = self._keys.get(kid)
        if key is not None and self._clock() < self._fresh_until:
            return key  # as cached(), without the extra call: this runs on every verification
        key, must_fetch = self._decide(kid)
        if not must_fetch:
            return key
        generation = self._generation
        with self._lock:
            if self._generation == generation:  # nobody fetched while we waited
                key, must_fetch = self._decide(kid)
                if not must_fetch:
                    return key
                try:
                    self._fetch_sync()
                except (httpx.HTTPError, ValueError) as exc:
                    return self._after_failure(kid, exc)
        return self._keys.get(kid)

    async def aget(self, kid: str) -> RSAPublicKey | None:
        """Async variant of :meth:`get`."""
        key = self.cached(kid)
        if key is not None:
            return key
        key, must_fetch = self._decide(kid)
        if not must_fetch:
            return key
        if self._alock is None:
            self._alock = asyncio.Lock()
        generation = self._generation
        async with self._alock:
            if self._generation == generation:
                key, must_fetch = self._decide(kid)
                if not must_fetch:
                    return key
                try:
                    await self._fetch_async()
                except (httpx.HTTPError, ValueError) as exc:
                    return self._after_failure(kid, exc)
        return self._keys.get(kid)

    def refresh(self) -> None:
        """Fetch the key set now (raises on failure)."""
        with self._lock:
            self._fetch_sync()

    # -- fetching -----------------------------------------------------------------------------

    def _fetch_sync(self) -> None:
        if self._http is None:
            self._http = httpx.Client(timeout=self._timeout)
        generation = self._generation
        try:
            # A key fetch is idempotent, so one retry on a transport error is safe.
            for attempt in (1, 2):
                self.fetch_count += 1
                try:
                    response = self._http.get(self._url, headers=_ACCEPT_JSON)
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise
            self._check_response(response)
            self._install(response.content)
        finally:
            self._note_outcome(generation)

    async def _fetch_async(self) -> None:
        if self._ahttp is None:
            self._ahttp = httpx.AsyncClient(timeout=self._timeout)
        generation = self._generation
        try:
            for attempt in (1, 2):
                self.fetch_count += 1
                try:
                    response = await self._ahttp.get(self._url, headers=_ACCEPT_JSON)
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise
            self._check_response(response)
            self._install(response.content)
        finally:
            self._note_outcome(generation)

    def _note_outcome(self, generation: int) -> None:
        # Any way out of a fetch that installed no set (an error, a timeout, a cancelled task)
        # is a failure: unknown kids then wait failure_backoff, not refetch_interval.
        if self._generation == generation:
            self._failed_at = self._clock()

    @staticmethod
    def _check_response(response: httpx.Response) -> None:
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")

    def close(self) -> None:
        """Close the sync HTTP client if this object created it."""
        if self._http is not None and self._owns_http:
            self._http.close()
            self._http = None

    async def aclose(self) -> None:
        """Close the HTTP clients this object created."""
        if self._ahttp is not None and self._owns_ahttp:
            await self._ahttp.aclose()
            self._ahttp = None
        self.close()

    def __repr__(self) -> str:
        source = "fixed" if self._fixed else self._url
        return f"AppleKeys({source}, kids={list(self._keys)})"
