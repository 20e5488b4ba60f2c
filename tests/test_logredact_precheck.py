"""The one-pass pre-check of log redaction never skips a line that a rule would change."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from appleconnect import _logredact


def all_rules(text: str) -> str:
    for pattern, replacement in _logredact._RULES:
        text = pattern.sub(replacement, text)
    return text


PIECES = st.sampled_from(
    [
        *sorted(_logredact.SECRET_PARAMETERS),
        "=",
        '"',
        ":",
        " ",
        "&",
        "Bearer ",
        "basic ",
        "X-API-Key: ",
        "acs_",
        "ack_",
        "acl_",
        "ach_",
        "eyJ",
        ".",
        "abcdefghij",
        "-",
        "/api/validate_auth_cookie",
        "?",
        "\n",
    ]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=14).map("".join))
def test_redact_equals_every_rule_applied(text: str) -> None:
    assert _logredact.redact(text) == all_rules(text)


def test_a_line_without_secrets_is_returned_as_is() -> None:
    line = '127.0.0.1:5000 - "GET /api/validate_auth_cookie HTTP/1.1" 200'
    assert _logredact.redact(line) is line
    assert _logredact.redact("GET /x?cookie=acs_abcdefghijkl") == "GET /x?cookie=[redacted]"
