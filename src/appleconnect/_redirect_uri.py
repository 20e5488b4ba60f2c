"""Apple's rules for a redirect URI, checked before Apple is asked (it refuses with no reason).

The client checks every redirect URI it is given (:meth:`AppleClient.authorization_url`,
:meth:`~AppleClient.exchange_code`), ``appleconnect doctor`` and the service's settings check the
configured ones.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["redirect_uri_problem"]


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
