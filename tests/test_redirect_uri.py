"""Apple's rules for a redirect URI (``appleconnect._redirect_uri``), and the sandbox's
relaxations of them."""

from __future__ import annotations

import pytest

from appleconnect._redirect_uri import redirect_uri_problem


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("http://example.com/cb", "HTTPS"),
        ("https://localhost/cb", "localhost"),
        ("https://127.0.0.1/cb", "IP address"),
        ("https://[::1]/cb", "IP address"),
        ("https://example.com/cb#x", "fragment"),
        ("/cb", "absolute"),
        ("https://intranet/cb", "domain name"),
        ("https://exa mple.com/cb", "spaces"),
    ],
)
def test_redirect_uri_rules(uri: str, problem: str) -> None:
    found = redirect_uri_problem(uri)
    assert found is not None
    assert problem in found


def test_redirect_uri_sandbox_relaxation() -> None:
    assert redirect_uri_problem("http://127.0.0.1:8000/cb", sandbox=True) is None
    assert "fragment" in (redirect_uri_problem("http://localhost/cb#f", sandbox=True) or "")
    assert redirect_uri_problem("https://example.com/auth/apple/callback") is None
