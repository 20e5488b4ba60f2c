"""The email sources a team registers for Apple's Private Email Relay, and the DKIM keys that
stand in for DNS.

At Apple a team registers, under "Sign in with Apple for Email Communication", the domains and
the individual addresses it sends from (up to 32 for an individual membership, 100 for an
organisation). The emulator keeps the same list per team; a domain may carry the DKIM public key
(selector and PEM) that DNS would publish at ``<selector>._domainkey.<domain>``. See
docs/emulator.md#private-email-relay.
"""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization

from ._errors import ControlError

Membership = Literal["individual", "organization"]
SOURCE_LIMITS: dict[Membership, int] = {"individual": 32, "organization": 100}

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
_SELECTOR = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_LOCAL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$")
MAX_PEM_CHARS = 4096


def checked_domain(value: str) -> str:
    """A lower-cased DNS name with at least two labels, or a refusal."""
    domain = value.strip().lower().rstrip(".")
    if len(domain) > 253 or not _DOMAIN.match(domain):
        raise ControlError(f"{value!r} is not a domain name.")
    return domain


def checked_address(value: str) -> str:
    """``local@domain`` with the domain lower-cased, or a refusal."""
    local, at, domain = value.strip().rpartition("@")
    if not at or not _LOCAL.match(local) or len(value) > 254:
        raise ControlError(f"{value!r} is not an email address.")
    return f"{local}@{checked_domain(domain)}"


def _dkim_record(pem: str) -> bytes:
    # The TXT record DNS would publish for this key: v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>.
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ControlError("dkim_public_key must be a PEM public key.") from exc
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kind = "ed25519" if key.__class__.__name__.lower().startswith("ed25519") else "rsa"
    return b"v=DKIM1; k=" + kind.encode() + b"; p=" + base64.b64encode(der)


@dataclass(frozen=True)
class EmailSource:
    """One registered source: a domain (with an optional DKIM key) or an individual address."""

    team_id: str
    domain: str | None = None
    email: str | None = None
    dkim_selector: str | None = None
    dkim_record: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        if self.email is not None:
            return {"team_id": self.team_id, "email": self.email}
        return {
            "team_id": self.team_id,
            "domain": self.domain,
            "dkim_selector": self.dkim_selector,
        }


class EmailSources:
    """Every team's registered sources and membership (thread-safe; kept in memory)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, list[EmailSource]] = {}
        self._membership: dict[str, Membership] = {}

    def membership(self, team_id: str) -> Membership:
        return self._membership.get(team_id, "organization")

    def set_membership(self, team_id: str, membership: str) -> None:
        chosen: Membership
        if membership == "individual":
            chosen = "individual"
        elif membership == "organization":
            chosen = "organization"
        else:
            raise ControlError("membership must be 'individual' or 'organization'.")
        with self._lock:
            if len(self._sources.get(team_id, [])) > SOURCE_LIMITS[chosen]:
                raise ControlError("The team already has more sources than that membership allows.")
            self._membership[team_id] = chosen

    def of(self, team_id: str) -> list[EmailSource]:
        with self._lock:
            return list(self._sources.get(team_id, []))

    def team_json(self, team_id: str) -> dict[str, Any]:
        membership = self.membership(team_id)
        return {
            "team_id": team_id,
            "membership": membership,
            "limit": SOURCE_LIMITS[membership],
            "sources": [s.as_json() for s in self.of(team_id)],
        }

    def add(self, source: EmailSource) -> bool:
        """Register ``source`` (replacing the same domain or address); False if it was there."""
        with self._lock:
            current = self._sources.setdefault(source.team_id, [])
            same = [s for s in current if (s.domain, s.email) == (source.domain, source.email)]
            if not same and len(current) >= SOURCE_LIMITS[self.membership(source.team_id)]:
                raise ControlError(
                    f"Team {source.team_id} already has {len(current)} email sources, the limit "
                    f"of an {self.membership(source.team_id)} membership.",
                    status=409,
                )
            for old in same:
                current.remove(old)
            current.append(source)
            return not same

    def remove(self, team_id: str, *, domain: str | None, email: str | None) -> bool:
        with self._lock:
            current = self._sources.get(team_id, [])
            kept = [s for s in current if (s.domain, s.email) != (domain, email)]
            self._sources[team_id] = kept
            return len(kept) != len(current)

    def has_domain(self, team_id: str, domain: str) -> bool:
        return any(s.domain == domain for s in self.of(team_id))

    def has_address(self, team_id: str, address: str) -> bool:
        wanted = address.lower()
        return any(s.email is not None and s.email.lower() == wanted for s in self.of(team_id))

    def dkim_txt(self, team_id: str, name: str) -> bytes | None:
        """The TXT record of ``<selector>._domainkey.<domain>`` among the team's sources."""
        selector, marker, domain = name.lower().rstrip(".").partition("._domainkey.")
        if not marker:
            return None
        for source in self.of(team_id):
            if source.domain == domain and source.dkim_selector == selector:
                return source.dkim_record
        return None


def source_from_body(team_id: str, data: dict[str, Any]) -> EmailSource:
    """The source a control-API body names: ``{"domain", "dkim_selector"?, "dkim_public_key"?}``
    or ``{"email"}``."""
    domain, email = data.get("domain"), data.get("email")
    if (domain is None) == (email is None):
        raise ControlError("Give either domain or email.")
    if email is not None:
        if not isinstance(email, str):
            raise ControlError("email must be a string.")
        return EmailSource(team_id=team_id, email=checked_address(email))
    if not isinstance(domain, str):
        raise ControlError("domain must be a string.")
    selector, pem = data.get("dkim_selector"), data.get("dkim_public_key")
    if (selector is None) != (pem is None):
        raise ControlError("Give dkim_selector and dkim_public_key together.")
    if selector is None:
        return EmailSource(team_id=team_id, domain=checked_domain(domain))
    if not isinstance(selector, str) or not _SELECTOR.match(selector.lower()):
        raise ControlError("dkim_selector must be a DNS label.")
    if not isinstance(pem, str) or len(pem) > MAX_PEM_CHARS:
        raise ControlError(f"dkim_public_key must be a PEM of at most {MAX_PEM_CHARS} characters.")
    return EmailSource(
        team_id=team_id,
        domain=checked_domain(domain),
        dkim_selector=selector.lower(),
        dkim_record=_dkim_record(pem),
    )
