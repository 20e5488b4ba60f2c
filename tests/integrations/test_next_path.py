"""The return path after a sign-in (``next``) stays on this site: anything a browser could read
as another host, or that is not a plain path, becomes ``/``."""

from __future__ import annotations

import pytest

from appleconnect.integrations import safe_next_path


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",  # browsers drop the tab: //evil.example
        "/\n/evil.example",
        "/\x7f/evil.example",
        "/\x85/evil.example",
        "/" + "a" * 512,
    ],
)
def test_anything_but_a_plain_path_here_becomes_the_root(value: str | None) -> None:
    assert safe_next_path(value) == "/"


@pytest.mark.parametrize("value", ["/", "/me", "/account?tab=2#top", "/%2F%2Fx", "/café"])
def test_a_path_on_this_site_is_kept(value: str) -> None:
    assert safe_next_path(value) == value
