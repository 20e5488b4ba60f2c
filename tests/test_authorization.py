"""parse_authorization_response: what Apple delivers to the redirect URI, validated."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appleconnect._authorization import (
    AppleUser,
    AuthorizationResponse,
    parse_authorization_response,
)
from appleconnect._errors import InvalidAuthorizationResponse

CODE = "c6ab1e8d1e1f94c0b9e3a1b2c3d4e5f60.0.nrwq.aBcDeFgHiJkLmNoP"
ID_TOKEN = "eyJraWQiOiJXNldjT0tCIiwiYWxnIjoiUlMyNTYifQ.eyJpc3MiOiJodHRwcyJ9.c2lnbmF0dXJl"
STATE = "x7Qm2sV9kLp4Rt8Zw1Yc"
USER = {
    "name": {"firstName": "Maria", "lastName": "Ruiz"},
    "email": "ep9ks2@privaterelay.appleid.com",
}


def form(**fields: Any) -> dict[str, str]:
    base = {"code": CODE, "id_token": ID_TOKEN, "state": STATE}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def test_first_authorization_with_user_json() -> None:
    response = parse_authorization_response(form(user=json.dumps(USER)))
    assert response == AuthorizationResponse(
        code=CODE,
        id_token=ID_TOKEN,
        state=STATE,
        error=None,
        user=AppleUser(
            first_name="Maria", last_name="Ruiz", email="ep9ks2@privaterelay.appleid.com"
        ),
    )
    assert response.user is not None
    assert response.user.full_name == "Maria Ruiz"
    assert not response.cancelled
    # Neither the code, the id_token nor the (unsigned) email appear in a repr.
    assert CODE not in repr(response)
    assert ID_TOKEN not in repr(response)
    assert "ep9ks2" not in repr(response)


def test_later_authorizations_have_no_user() -> None:
    response = parse_authorization_response(form())
    assert response.user is None
    assert response.code == CODE


def test_code_only_response_type() -> None:
    response = parse_authorization_response({"code": CODE, "state": STATE})
    assert response.id_token is None


def test_user_with_only_email_or_only_name() -> None:
    only_email = parse_authorization_response(form(user='{"email":"a@b.example"}')).user
    assert only_email == AppleUser(email="a@b.example")
    assert only_email.full_name is None
    only_name = parse_authorization_response(form(user='{"name":{"firstName":"Zoë"}}')).user
    assert only_name == AppleUser(first_name="Zoë")


def test_names_are_stripped_and_normalised() -> None:
    blob = json.dumps({"name": {"firstName": "  Zoe\u0308  ", "lastName": "   "}})
    user = parse_authorization_response(form(user=blob)).user
    assert user == AppleUser(first_name="Zoë", last_name=None)


@pytest.mark.parametrize(
    "bad_name",
    [
        "Maria\x00",
        "Ma\nria",
        "Maria\x1b[31m",
        "\u202eairaM",  # right-to-left override
        "Maria\u2028Ruiz",
        "M" * 101,
    ],
)
def test_bad_names_are_refused(bad_name: str) -> None:
    blob = json.dumps({"name": {"firstName": bad_name, "lastName": "Ruiz"}})
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response(form(user=blob))
    assert exc.value.field == "user"
    assert "firstName" in str(exc.value)


@pytest.mark.parametrize(
    ("blob", "words"),
    [
        ("{not json", "not valid JSON"),
        ('"a string"', "not an object"),
        ("[]", "not an object"),
        ('{"name": "Maria Ruiz"}', '"name" is not an object'),
        ('{"name": {"firstName": 5}}', "'firstName' is not a string"),
        ('{"email": ["a@b.c"]}', '"email" is not a string'),
        ('{"email": "not-an-email"}', "not an email address"),
        ('{"email": "a@b.c", "email": "evil@x.y"}', "not valid JSON"),  # duplicate key
        ('{"name": {"firstName": NaN}}', "not valid JSON"),
        ("[" * 5000 + "]" * 5000, "larger than 4096"),
        ("[" * 2000 + "]" * 2000, "not valid JSON"),
        (json.dumps({"name": {"firstName": "x" * 5000}}), "larger than 4096"),
    ],
)
def test_malformed_user_json_is_refused(blob: str, words: str) -> None:
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response(form(user=blob))
    assert exc.value.field == "user"
    assert words in str(exc.value)


def test_user_json_size_counts_bytes_not_characters() -> None:
    # 1,500 three-byte characters: under 4,096 characters but over 4,096 bytes.
    blob = json.dumps({"name": {"firstName": "名" * 1500}}, ensure_ascii=False)
    assert len(blob) < 4096 < len(blob.encode())
    with pytest.raises(InvalidAuthorizationResponse, match="larger than 4096 bytes"):
        parse_authorization_response(form(user=blob))


@pytest.mark.parametrize(
    ("error", "cancelled"),
    [
        ("user_cancelled_authorize", True),
        ("popup_closed_by_user", True),
        ("user_trigger_new_signin_flow", True),
        ("invalid_request", False),
        ("something_new_from_apple", False),
    ],
)
def test_error_responses_are_returned_not_raised(error: str, cancelled: bool) -> None:
    response = parse_authorization_response({"error": error, "state": STATE})
    assert response.error == error
    assert response.code is None
    assert response.id_token is None
    assert response.user is None
    assert response.state == STATE
    assert response.cancelled is cancelled


def test_error_with_a_code_is_ambiguous() -> None:
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response({"error": "user_cancelled_authorize", "code": CODE})
    assert exc.value.field == "code"


@pytest.mark.parametrize("bad_error", ["x" * 200, "user cancelled", "<script>"])
def test_malformed_error_codes_are_refused(bad_error: str) -> None:
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response({"error": bad_error})
    assert exc.value.field == "error"


@pytest.mark.parametrize("fields", [{}, {"state": STATE}, {"code": "", "state": STATE}])
def test_no_code_and_no_error_raises(fields: dict[str, str]) -> None:
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response(fields)
    assert exc.value.field == "code"
    assert "neither a code nor an error" in str(exc.value)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"code": "c" * 1025}, "code"),
        ({"code": "abc def"}, "code"),
        ({"code": "abc\x00"}, "code"),
        ({"code": "abcé"}, "code"),
        ({"state": "s" * 1025}, "state"),
        ({"state": "abc\r\nSet-Cookie: x"}, "state"),
        ({"id_token": "a" * 20_000}, "id_token"),
        ({"id_token": "not-a-jwt"}, "id_token"),
        ({"id_token": "a.b.c.d"}, "id_token"),
        ({"id_token": "a.b+/.c"}, "id_token"),
    ],
)
def test_oversized_or_malformed_fields_are_refused(fields: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response(form(**fields))
    assert exc.value.field == field


def test_repeated_parameters_are_refused_in_every_input_form() -> None:
    # parse_qs-style dict of lists.
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response({"code": [CODE, "attacker-code"], "state": [STATE]})
    assert exc.value.field == "code"
    assert "2 times" in str(exc.value)
    # Raw query string.
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response(f"code={CODE}&state={STATE}&state=other")
    assert exc.value.field == "state"

    # A framework multi-dict (Starlette FormData, Django QueryDict) whose [] returns one value.
    class MultiDict(dict[str, str]):
        def __init__(self, pairs: list[tuple[str, str]]) -> None:
            super().__init__(pairs)
            self.pairs = pairs

        def getlist(self, key: str) -> list[str]:
            return [v for k, v in self.pairs if k == key]

    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response(
            MultiDict([("code", CODE), ("user", "{}"), ("user", json.dumps(USER))])
        )
    assert exc.value.field == "user"
    ok = parse_authorization_response(MultiDict([("code", CODE), ("state", STATE)]))
    assert ok.code == CODE


def test_single_element_lists_and_query_strings_are_accepted() -> None:
    encoded = urlencode({"code": CODE, "state": STATE, "user": json.dumps(USER)})
    from_lists = parse_authorization_response(parse_qs(encoded))
    from_string = parse_authorization_response(encoded)
    from_fragment = parse_authorization_response("#" + encoded)
    assert from_lists == from_string == from_fragment
    assert from_string.user is not None
    assert from_string.user.last_name == "Ruiz"


def test_unknown_parameters_are_ignored() -> None:
    response = parse_authorization_response(form(frame_id="123", m="11", v="1.5.4"))
    assert response.code == CODE


@pytest.mark.parametrize(
    ("value", "error"),
    [({"code": 5}, InvalidAuthorizationResponse), ({"code": [b"x"]}, InvalidAuthorizationResponse)],
)
def test_non_string_values_are_refused(value: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_authorization_response(value)


def test_wrong_input_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="decode"):
        parse_authorization_response(b"code=x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        parse_authorization_response([("code", "x")])  # type: ignore[arg-type]


def test_oversized_query_string() -> None:
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        parse_authorization_response("code=" + "x" * 70_000)
    assert exc.value.field == "query"


def test_check_state() -> None:
    response = parse_authorization_response(form())
    response.check_state(STATE)
    with pytest.raises(InvalidAuthorizationResponse) as exc:
        response.check_state("a-different-state-value")
    assert exc.value.field == "state"
    no_state = parse_authorization_response({"code": CODE})
    with pytest.raises(InvalidAuthorizationResponse):
        no_state.check_state(STATE)
    with pytest.raises(ValueError, match="empty"):
        response.check_state("")


@given(st.dictionaries(st.sampled_from(["code", "id_token", "state", "error", "user"]), st.text()))
def test_any_input_either_parses_or_raises_the_documented_error(fields: dict[str, str]) -> None:
    field: str | None
    try:
        response = parse_authorization_response(fields)
    except InvalidAuthorizationResponse as exc:
        field = exc.field
    else:
        field = None
    if field is not None:
        assert field in {"code", "id_token", "state", "error", "user"}
        return
    assert (response.code is None) != (response.error is None)
    for value in (response.code, response.state, response.error):
        assert value is None or all(ord(ch) >= 32 and ch != "\x7f" for ch in value)
