"""The one-pass pre-check of log redaction never skips a line that a rule would change."""

from __future__ import annotations

import logging

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


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=14).map("".join))
def test_the_lower_case_search_finds_what_the_case_insensitive_one_finds(text: str) -> None:
    for variant in (text, text.upper(), text.swapcase()):
        expected = _logredact._MAYBE.search(variant) is not None
        assert _logredact._maybe_secret(variant) is expected


def _record(msg: str, *args: object) -> logging.LogRecord:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)
    _logredact.redact_record(record)
    return record


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=6)), min_size=1, max_size=5))
def test_arguments_checked_together_are_redacted_as_one_by_one(args: list[str]) -> None:
    record = _record(" ".join(["%s"] * len(args)), *args)
    assert record.getMessage() == " ".join(_logredact.redact(a) for a in args)


def test_an_access_line_keeps_its_arguments_or_loses_its_secret() -> None:
    fmt = '%s - "%s %s HTTP/%s" %d'
    clean = ("127.0.0.1:5000", "GET", "/api/get_currentuserinfo", "1.1", 200)
    assert _record(fmt, *clean).args == clean
    secret = ("127.0.0.1:5000", "GET", "/api/x?cookie=acs_abcdefghijkl", "1.1", 200)
    line = _record(fmt, *secret).getMessage()
    assert line == '127.0.0.1:5000 - "GET /api/x?cookie=[redacted] HTTP/1.1" 200'
    assert _record("token=%s", "x").msg == "token=[redacted]"
