"""Offline checks of a Sign in with Apple configuration (``appleconnect doctor``).

Each check targets one cause of ``invalid_client`` or of a refused redirect, so that a wrong
setting is named before Apple answers with no reason at all
(docs/pitfalls.md#pitfall-invalid-client, docs/pitfalls.md#pitfall-no-local-testing,
docs/pitfalls.md#pitfall-secret-expiry). The admin panel runs the same checks.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._constants import APPLE_ISSUER, CLIENT_SECRET_MAX_TTL
from ._jws import decode_unverified
from ._redirect_uri import redirect_uri_problem
from ._secret import ClientSecret, load_private_key, validate_client_id, validate_team_or_key_id

__all__ = ["SECRET_EXPIRY_WARNING", "Check", "run_checks"]

SECRET_EXPIRY_WARNING = 30 * 86_400
"""A pasted client secret that expires within this many seconds is reported as a warning."""

_KEY_FILE_NAME = re.compile(r"AuthKey_([A-Z0-9]{10})\.p8$")


@dataclass(frozen=True, slots=True)
class Check:
    """The result of one check: ``ok`` false means Apple would refuse this configuration."""

    name: str
    ok: bool
    detail: str
    warning: bool = False

    @property
    def label(self) -> str:
        return "FAIL" if not self.ok else ("WARN" if self.warning else "PASS")


def _check_pasted_secret(
    secret: str,
    *,
    team_id: str | None,
    key_id: str | None,
    client_ids: Sequence[str],
    key: ec.EllipticCurvePrivateKey | None,
    now: float,
) -> list[Check]:
    name = "pasted client secret"
    try:
        header, claims, signature = decode_unverified(secret)
    except ValueError as exc:
        return [Check(name, False, f"malformed: {exc}")]
    problems: list[str] = []
    if header.get("alg") != "ES256":
        problems.append(f"alg is {header.get('alg')!r}, Apple requires ES256")
    if key_id and header.get("kid") != key_id:
        problems.append(f"kid is {header.get('kid')!r}, not the Key ID {key_id!r}")
    if team_id and claims.get("iss") != team_id:
        problems.append(f"iss is {claims.get('iss')!r}, not the Team ID {team_id!r}")
    if claims.get("aud") != APPLE_ISSUER:
        problems.append(f"aud is {claims.get('aud')!r}, Apple requires {APPLE_ISSUER!r}")
    if client_ids and claims.get("sub") not in client_ids:
        problems.append(f"sub is {claims.get('sub')!r}, not the client id {client_ids[0]!r}")
    if len(signature) != 64:
        problems.append(
            f"the signature is {len(signature)} bytes; Apple requires raw R||S (64 bytes), "
            "a DER signature gives invalid_client"
        )
    problems += _lifetime_problems(claims, now)
    if key is not None and len(signature) == 64 and not _signed_by(key, secret, signature):
        problems.append("its signature does not verify with the private key given")
    if problems:
        return [Check(name, False, "; ".join(problems))]
    remaining = claims["exp"] - now
    days = remaining / 86_400
    if remaining < SECRET_EXPIRY_WARNING:
        return [Check(name, True, f"valid, but expires in {days:.1f} days", warning=True)]
    return [Check(name, True, f"valid; expires in {days:.0f} days")]


def _lifetime_problems(claims: dict[str, Any], now: float) -> list[str]:
    """What is wrong with a client secret's ``exp`` and ``iat`` at ``now``."""
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        return ["exp or iat is missing or not an integer"]
    problems = []
    if exp - iat > CLIENT_SECRET_MAX_TTL:
        problems.append(f"it is valid for {exp - iat} s, more than Apple's 15,777,000 s")
    if exp <= now:
        problems.append(f"it expired {int(now - exp)} s ago")
    if iat > now + 60:
        problems.append("its iat is in the future")
    return problems


def _signed_by(key: ec.EllipticCurvePrivateKey, secret: str, signature: bytes) -> bool:
    """Whether the raw R||S ``signature`` of ``secret`` verifies with ``key``'s public key."""
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    signing_input = secret.strip().rsplit(".", 1)[0].encode("ascii")
    try:
        key.public_key().verify(
            encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        return False
    return True


def _attempt(checks: list[Check], name: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or ``None`` after recording why it failed as the check ``name``."""
    try:
        return fn(*args)
    except (ValueError, TypeError, OSError) as exc:
        checks.append(Check(name, False, str(exc)))
        return None


def _check_identifiers(
    checks: list[Check], team_id: str | None, key_id: str | None, ids: list[str]
) -> tuple[str | None, str | None]:
    """The Team ID, the Key ID and the client ids; returns the valid Team ID and Key ID."""
    team = _attempt(checks, "Team ID", validate_team_or_key_id, team_id or "", "Team ID")
    if team:
        checks.append(Check("Team ID", True, team))
    kid = _attempt(checks, "Key ID", validate_team_or_key_id, key_id or "", "Key ID")
    if kid:
        checks.append(Check("Key ID", True, kid))
    if not ids:
        checks.append(Check("client id", False, "no client id configured (Services ID/App ID)"))
    for client_id in ids:
        if _attempt(checks, f"client id {client_id}", validate_client_id, client_id, team):
            checks.append(Check(f"client id {client_id}", True, "well-formed"))
    return team, kid


def _read_key_file(checks: list[Check], key_path: str, kid: str | None) -> bytes | None:
    """The .p8 file's bytes (``None`` when unreadable); a file named for another key fails."""
    match = _KEY_FILE_NAME.search(os.path.basename(key_path))
    if match and kid and match.group(1) != kid:
        checks.append(
            Check(
                "key file name",
                False,
                f"{os.path.basename(key_path)} is the key {match.group(1)}, but the Key ID "
                f"is {kid}: with several keys in one account this is the usual cause of "
                "invalid_client",
            )
        )
    try:
        with open(key_path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        checks.append(Check("private key", False, f"cannot read {key_path}: {exc.strerror}"))
        return None


def _check_minted_secret(
    team: str, kid: str, client_id: str, private_key: str | bytes, now: float
) -> Check:
    """The client secret the library would make from these settings."""
    try:
        secret = ClientSecret(team, kid, client_id, private_key, clock=lambda: now)
        header, claims, signature = decode_unverified(secret.token)
    except (ValueError, TypeError) as exc:
        return Check("client secret", False, str(exc))
    detail = (
        f"ES256, kid {header['kid']}, iss {claims['iss']}, sub {claims['sub']}, "
        f"valid {claims['exp'] - int(now)} s, raw R||S ({len(signature)} bytes)"
    )
    return Check("client secret", True, detail)


def _check_redirect_uri(uri: str, sandbox: bool) -> Check:
    problem = redirect_uri_problem(uri, sandbox=sandbox)
    if problem:
        return Check(f"redirect URI {uri}", False, f"Apple would refuse it: {problem}")
    if sandbox and redirect_uri_problem(uri) is not None:
        return Check(
            f"redirect URI {uri}",
            True,
            "accepted by the emulator only (sandbox); Apple requires HTTPS and a domain",
            warning=True,
        )
    return Check(f"redirect URI {uri}", True, "acceptable to Apple")


def run_checks(
    *,
    team_id: str | None,
    key_id: str | None,
    client_ids: Iterable[str],
    private_key: str | bytes | None = None,
    key_path: str | None = None,
    redirect_uris: Iterable[str] = (),
    client_secret: str | None = None,
    sandbox: bool = False,
    now: float | None = None,
) -> list[Check]:
    """Run every offline check that the given settings allow; return one result per check."""
    now = time.time() if now is None else now
    checks: list[Check] = []
    ids = list(client_ids)
    team, kid = _check_identifiers(checks, team_id, key_id, ids)
    unreadable = False
    if key_path is not None:
        read = _read_key_file(checks, key_path, kid)
        unreadable = read is None
        private_key = private_key if read is None else read
    key = None
    if private_key is not None:
        key = _attempt(checks, "private key", load_private_key, private_key)
        if key is not None:
            checks.append(Check("private key", True, "EC P-256 (PKCS#8), as Apple issues"))
    elif client_secret is None and not unreadable:
        checks.append(Check("private key", False, "no private key (.p8) and no client secret"))
    if key is not None and team and kid and ids:
        checks.append(_check_minted_secret(team, kid, ids[0], private_key or b"", now))
    if client_secret is not None:
        checks.extend(
            _check_pasted_secret(
                client_secret, team_id=team, key_id=kid, client_ids=ids, key=key, now=now
            )
        )
    checks.extend(_check_redirect_uri(uri, sandbox) for uri in redirect_uris)
    return checks
