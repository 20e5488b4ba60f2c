"""Offline checks of a Sign in with Apple configuration (``appleconnect doctor``).

Each check targets one cause of ``invalid_client`` or of a refused redirect, so that a wrong
setting is named before Apple answers with no reason at all
(docs/pitfalls.md#pitfall-invalid-client, docs/pitfalls.md#pitfall-no-local-testing,
docs/pitfalls.md#pitfall-secret-expiry). The admin panel runs the same checks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._constants import APPLE_ISSUER, CLIENT_SECRET_MAX_TTL
from ._jws import b64url_decode
from ._secret import ClientSecret, load_private_key, validate_client_id, validate_team_or_key_id

__all__ = ["Check", "decode_unverified", "redirect_uri_problem", "run_checks"]

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


def redirect_uri_problem(uri: str, *, sandbox: bool = False) -> str | None:
    """Return why Apple would refuse ``uri`` as a redirect URI, or ``None`` if it would not.

    Apple's rules (docs/apple-protocol.md#quirk-redirect-uri-rules): HTTPS, a domain name, no IP
    address, no ``localhost``, no fragment. In sandbox mode (the emulator) HTTP, IP addresses and
    localhost are allowed; a fragment or a relative URL never is.
    """
    if not uri or any(c.isspace() or not c.isprintable() for c in uri):
        return "it is empty or contains spaces or control characters"
    if "#" in uri:
        return "it contains a fragment ('#'), which Apple refuses"
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it is not an absolute http(s) URL such as https://example.com/callback"
    if sandbox:
        return None
    host = parts.hostname
    if parts.scheme != "https":
        return "Apple requires HTTPS"
    if host == "localhost" or host.endswith(".localhost"):
        return "Apple refuses localhost (use the emulator for local development)"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return "Apple refuses an IP address; use a domain name"
    if "." not in host:
        return "Apple requires a domain name with a dot (a registered, verified domain)"
    return None


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Header, claims and raw signature of a compact JWS, without verifying anything."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ValueError("it is not a JWT (three dot-separated parts)")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        raise ValueError("it is not base64url-encoded JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("its header or claims are not JSON objects")
    return header, claims, signature


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
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        problems.append("exp or iat is missing or not an integer")
    else:
        if exp - iat > CLIENT_SECRET_MAX_TTL:
            problems.append(f"it is valid for {exp - iat} s, more than Apple's 15,777,000 s")
        if exp <= now:
            problems.append(f"it expired {int(now - exp)} s ago")
        if iat > now + 60:
            problems.append("its iat is in the future")
    if key is not None and len(signature) == 64:
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        signing_input = secret.strip().rsplit(".", 1)[0].encode("ascii")
        try:
            key.public_key().verify(
                encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:
            problems.append("its signature does not verify with the private key given")
    if problems:
        return [Check(name, False, "; ".join(problems))]
    assert isinstance(exp, int)
    remaining = exp - now
    days = remaining / 86_400
    if remaining < SECRET_EXPIRY_WARNING:
        return [Check(name, True, f"valid, but expires in {days:.1f} days", warning=True)]
    return [Check(name, True, f"valid; expires in {days:.0f} days")]


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

    def attempt(name: str, fn: Any, *args: Any) -> Any:
        try:
            value = fn(*args)
        except (ValueError, TypeError, OSError) as exc:
            checks.append(Check(name, False, str(exc)))
            return None
        return value

    team = attempt("Team ID", validate_team_or_key_id, team_id or "", "Team ID")
    if team:
        checks.append(Check("Team ID", True, team))
    kid = attempt("Key ID", validate_team_or_key_id, key_id or "", "Key ID")
    if kid:
        checks.append(Check("Key ID", True, kid))
    if not ids:
        checks.append(Check("client id", False, "no client id configured (Services ID/App ID)"))
    for client_id in ids:
        if attempt(f"client id {client_id}", validate_client_id, client_id, team):
            checks.append(Check(f"client id {client_id}", True, "well-formed"))

    key = None
    unreadable = False
    if key_path is not None:
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
                private_key = handle.read()
        except OSError as exc:
            checks.append(Check("private key", False, f"cannot read {key_path}: {exc.strerror}"))
            unreadable = True
    if private_key is not None:
        key = attempt("private key", load_private_key, private_key)
        if key is not None:
            checks.append(Check("private key", True, "EC P-256 (PKCS#8), as Apple issues"))
    elif client_secret is None and not unreadable:
        checks.append(Check("private key", False, "no private key (.p8) and no client secret"))

    if key is not None and team and kid and ids:
        try:
            secret = ClientSecret(team, kid, ids[0], private_key or b"", clock=lambda: now)
            header, claims, signature = decode_unverified(secret.token)
        except (ValueError, TypeError) as exc:
            checks.append(Check("client secret", False, str(exc)))
        else:
            detail = (
                f"ES256, kid {header['kid']}, iss {claims['iss']}, sub {claims['sub']}, "
                f"valid {claims['exp'] - int(now)} s, raw R||S ({len(signature)} bytes)"
            )
            checks.append(Check("client secret", True, detail))
    if client_secret is not None:
        checks.extend(
            _check_pasted_secret(
                client_secret, team_id=team, key_id=kid, client_ids=ids, key=key, now=now
            )
        )

    uris = list(redirect_uris)
    for uri in uris:
        problem = redirect_uri_problem(uri, sandbox=sandbox)
        if problem:
            checks.append(Check(f"redirect URI {uri}", False, f"Apple would refuse it: {problem}"))
        elif sandbox and redirect_uri_problem(uri) is not None:
            checks.append(
                Check(
                    f"redirect URI {uri}",
                    True,
                    "accepted by the emulator only (sandbox); Apple requires HTTPS and a domain",
                    warning=True,
                )
            )
        else:
            checks.append(Check(f"redirect URI {uri}", True, "acceptable to Apple"))
    return checks
