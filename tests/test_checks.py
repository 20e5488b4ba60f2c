"""``appleconnect.checks``: the one public module through which services use the library's
rules for a configuration. Its names are pinned, and each is the library's own function (one
rule, one place)."""

from __future__ import annotations

import base64
import json

import pytest

import appleconnect.checks as checks
from appleconnect import _doctor, _jws, _lists, _redirect_uri, _secret


def test_the_public_names_are_pinned() -> None:
    assert sorted(checks.__all__) == [
        "Check",
        "SECRET_EXPIRY_WARNING",
        "decode_unverified",
        "load_private_key",
        "redirect_uri_problem",
        "run_checks",
        "split_list",
        "validate_client_id",
        "validate_team_or_key_id",
    ]


def test_each_name_is_the_rule_itself_not_a_copy() -> None:
    assert checks.run_checks is _doctor.run_checks
    assert checks.Check is _doctor.Check
    assert checks.SECRET_EXPIRY_WARNING == _doctor.SECRET_EXPIRY_WARNING
    assert checks.decode_unverified is _jws.decode_unverified
    assert checks.redirect_uri_problem is _redirect_uri.redirect_uri_problem
    assert checks.load_private_key is _secret.load_private_key
    assert checks.validate_client_id is _secret.validate_client_id
    assert checks.validate_team_or_key_id is _secret.validate_team_or_key_id
    assert checks.split_list is _lists.split_list


def _segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def test_decode_unverified_reads_without_verifying() -> None:
    token = ".".join([_segment({"alg": "ES256", "kid": "K"}), _segment({"exp": 5}), "c2ln"])
    header, claims, signature = checks.decode_unverified(token)
    assert header == {"alg": "ES256", "kid": "K"}
    assert claims == {"exp": 5}
    assert signature == b"sig"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("one.two", "three dot-separated parts"),
        ("a.b.c", "base64url-encoded JSON"),
        (".".join([_segment([1]), _segment({}), ""]), "not JSON objects"),
    ],
)
def test_decode_unverified_refuses_what_is_not_a_jwt(token: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        checks.decode_unverified(token)
