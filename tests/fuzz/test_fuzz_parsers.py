"""Property-based fuzzing of every library parser that reads outside input.

Apple's redirect or form_post (``parse_authorization_response``, its ``user`` JSON included),
the identity token, the server-to-server notification, and the key set (``AppleKeys.from_jwks``
and a fetched ``/auth/keys`` answer). The invariant, for any input: the parser returns, or
raises one of its documented error types; never anything else (no ``KeyError``,
``RecursionError``, ``UnicodeError``, ``OverflowError``...). Tokens are also built from random
claims and signed with the real key, so that fuzzing reaches the claim checks behind the
signature, and verification runs with and without the optional accelerators, which must agree.

Bounded: every test has a small ``max_examples``; the whole file runs in seconds.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appleconnect import (
    AppleKeys,
    AuthorizationResponse,
    IdentityToken,
    InvalidAuthorizationResponse,
    InvalidIdentityToken,
    InvalidNotification,
    KeysUnavailable,
    Notification,
    _jws,
    parse_authorization_response,
    parse_notification,
    verify_identity_token,
)
from appleconnect._jws import b64url_encode
from appletest import APP_ID, AUDIENCE, KID, NOW, apple_claims, jwk_for

FUZZ = settings(
    max_examples=150,
    deadline=None,  # a shared, busy machine: no timing goals in tests
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
AUDIENCES = frozenset({AUDIENCE, APP_ID})

# Any code point, lone surrogates included (a str can hold them, e.g. after surrogateescape).
# Lone surrogates, control and format characters and line separators are drawn on purpose:
# among all code points they are too rare to come up by chance (and st.text() never draws a
# lone surrogate, so the characters are joined by hand).
any_text = st.lists(
    st.characters() | st.characters(categories=["Cs", "Cc", "Cf", "Zl"]), max_size=80
).map("".join)
# Any JSON value, with the awkward corners: NaN and infinities (which json.dumps writes and
# strict parsers refuse), big integers, lone surrogates, nesting.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
# Deeply nested documents (about 2 KB), the shape that once overflowed the stack elsewhere.
deep_json = st.builds(
    lambda depth, opener: opener * depth, st.integers(500, 5000), st.sampled_from(["[", '{"a":'])
)


def outcome(run: Any, *errors: type[Exception]) -> Any:
    """What ``run()`` returns, or the documented error it raises (anything else propagates)."""
    try:
        return run()
    except errors as exc:
        return exc


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# -- Apple's redirect / form_post and its `user` JSON -----------------------------------------

FIELDS = ["code", "id_token", "state", "error", "user", "other"]
user_documents = st.one_of(
    st.builds(
        lambda first, last, email, extra: dumps(
            {"name": {"firstName": first, "lastName": last}, "email": email, **extra}
        ),
        json_values,
        json_values,
        json_values,
        st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    ),
    json_values.map(dumps),
    deep_json,
    st.text(max_size=200),
    any_text.map(lambda t: dumps({"name": {"firstName": "x"}, "email": "a@b.c"})[:-2] + t + '"}'),
    any_text,
)
field_values = st.one_of(
    any_text,
    st.text(alphabet=st.characters(codec="ascii"), max_size=80),
    user_documents,
)
form_dicts = st.dictionaries(
    st.sampled_from(FIELDS), field_values | st.lists(field_values, max_size=3), max_size=6
)


def query_string(fields: dict[str, Any]) -> str:
    """The percent-encoded query string; a lone surrogate becomes bytes that are not UTF-8."""
    return urlencode(fields, doseq=True, errors="surrogatepass")


def check_response(response: AuthorizationResponse) -> None:
    assert (response.code is None) != (response.error is None)
    if response.user is not None:
        for name in (response.user.first_name, response.user.last_name):
            assert name is None or len(name) <= 100


@FUZZ
@given(source=form_dicts | st.text(max_size=300) | form_dicts.map(query_string))
def test_authorization_response_parses_or_raises_its_error(source: Any) -> None:
    result = outcome(lambda: parse_authorization_response(source), InvalidAuthorizationResponse)
    if isinstance(result, InvalidAuthorizationResponse):
        assert result.field in {*FIELDS, "query"}
    else:
        check_response(result)


@FUZZ
@given(user=user_documents)
def test_user_json_parses_or_raises_its_error(user: str) -> None:
    form = {"code": "c.fuzz", "user": user}
    result = outcome(lambda: parse_authorization_response(form), InvalidAuthorizationResponse)
    if isinstance(result, InvalidAuthorizationResponse):
        assert result.field == "user"
    else:
        check_response(result)


# -- identity tokens and notifications ----------------------------------------------------------


@pytest.fixture(scope="module")
def keys(apple_key: rsa.RSAPrivateKey) -> AppleKeys:
    return AppleKeys.from_jwks({"keys": [jwk_for(apple_key, KID)]})


def claim_overrides(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Valid claims with some replaced by random JSON values (or removed: None)."""
    return st.dictionaries(st.sampled_from(names), json_values, max_size=len(names))


IDENTITY_CLAIMS = [
    *apple_claims(),
    "nonce",
    "real_user_status",
    "transfer_sub",
    "at_hash",
    "org_id",
    "unknown",
]
headers = st.fixed_dictionaries(
    {}, optional={"kid": json_values | st.just(KID), "alg": json_values, "crit": json_values}
)


def signed(key: rsa.RSAPrivateKey, header: dict[str, Any], payload: str) -> str:
    """A compact JWS over arbitrary header and payload text, signed RS256 with ``key``."""
    signing_input = b64url_encode(dumps(header).encode()) + "." + b64url_encode(payload.encode())
    signature = jwt.get_algorithm_by_name("RS256").sign(signing_input.encode(), key)
    return signing_input + "." + b64url_encode(signature)


def token_strategy(key: rsa.RSAPrivateKey, claims: st.SearchStrategy[str]) -> Any:
    header = st.just({"alg": "RS256", "kid": KID}) | headers
    return st.builds(lambda h, p: signed(key, h, p), header, claims)


def both_codecs(run: Any) -> Any:
    """Run with the accelerators and with the standard library; the outcomes must agree."""
    outcomes = []
    for enabled in (True, False):
        _jws._set_speedups(enabled)
        try:
            outcomes.append(run())
        except (InvalidIdentityToken, InvalidNotification) as exc:
            outcomes.append((type(exc), exc.reason, exc.claim))
        finally:
            _jws._set_speedups(True)
    assert outcomes[0] == outcomes[1]
    return outcomes[0]


@FUZZ
@given(data=st.data())
def test_identity_token_verifies_or_raises_its_error(
    keys: AppleKeys, apple_key: rsa.RSAPrivateKey, data: st.DataObject
) -> None:
    payload = st.builds(
        lambda overrides: dumps({**apple_claims(), **overrides}),
        claim_overrides(IDENTITY_CLAIMS),
    )
    token = data.draw(
        token_strategy(apple_key, payload | json_values.map(dumps) | deep_json | st.text())
        | st.text(max_size=300)
        | st.text(alphabet="abcXYZ09-_.", max_size=300)
    )
    nonce = data.draw(st.none() | st.text(min_size=1, max_size=20))
    result = both_codecs(
        lambda: verify_identity_token(token, keys, audiences=AUDIENCES, nonce=nonce, now=NOW)
    )
    if isinstance(result, IdentityToken):
        assert result.sub
        assert result.audience in AUDIENCES
    else:
        assert result[0] is InvalidIdentityToken


NOTIFICATION_CLAIMS = ["iss", "aud", "iat", "exp", "jti", "events", "unknown"]
EVENT_FIELDS = ["type", "sub", "event_time", "email", "is_private_email", "unknown"]


def notification_claims(
    overrides: dict[str, Any], event_overrides: dict[str, Any], events_as: str
) -> str:
    event = {"type": "consent-revoked", "sub": "001.abc.1", "event_time": NOW, **event_overrides}
    events: Any = {"string": dumps(event), "object": event, "list": [event]}[events_as]
    claims = {"iss": "https://appleid.apple.com", "aud": AUDIENCE, "iat": NOW, "jti": "j"}
    return dumps({**claims, "events": events, **overrides})


@FUZZ
@given(data=st.data())
def test_notification_parses_or_raises_its_error(
    keys: AppleKeys, apple_key: rsa.RSAPrivateKey, data: st.DataObject
) -> None:
    payload = st.builds(
        notification_claims,
        claim_overrides(NOTIFICATION_CLAIMS),
        st.dictionaries(st.sampled_from(EVENT_FIELDS), json_values),
        st.sampled_from(["string", "object", "list"]),
    )
    token = token_strategy(apple_key, payload | json_values.map(dumps))
    body = data.draw(
        token.map(lambda t: dumps({"payload": t}).encode())
        | st.builds(lambda v: dumps({"payload": v}), json_values)
        | json_values.map(dumps)
        | deep_json
        | st.binary(max_size=300)
        | st.text(max_size=300)
    )
    result = both_codecs(lambda: parse_notification(body, keys, audiences=AUDIENCES, now=NOW))
    if isinstance(result, Notification):
        assert result.sub
        assert result.jti
    else:
        assert result[0] is InvalidNotification


# -- Apple's key set ------------------------------------------------------------------------------

jwk_entries = st.fixed_dictionaries(
    {},
    optional={
        "kty": st.just("RSA") | json_values,
        "kid": st.text(max_size=300) | json_values,
        "alg": st.just("RS256") | json_values,
        "use": st.just("sig") | json_values,
        "n": st.binary(max_size=300).map(b64url_encode) | json_values,
        "e": st.sampled_from(["AQAB", "AAEAAQ", "Aw", "AA", ""]) | json_values,
    },
)
jwks_documents = (
    st.fixed_dictionaries({"keys": st.lists(jwk_entries | json_values, max_size=5)}) | json_values
)


@FUZZ
@given(document=jwks_documents)
def test_jwks_parses_or_raises_value_error(document: Any) -> None:
    try:
        fixed = AppleKeys.from_jwks(document)
    except ValueError:
        return
    assert fixed.kids
    for kid in fixed.kids:
        assert fixed.get(kid) is not None


@FUZZ
@given(
    status=st.sampled_from([200, 200, 200, 404, 500, 503]),
    body=jwks_documents.map(lambda d: dumps(d).encode()) | deep_json.map(str.encode) | st.binary(),
    kid=st.sampled_from([KID, "other"]),
)
def test_fetched_key_set_gives_a_key_none_or_keys_unavailable(
    status: int, body: bytes, kid: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        keys = AppleKeys(base_url="https://apple.test", http_client=client)
        result = outcome(lambda: keys.get(kid), KeysUnavailable)
    if isinstance(result, KeysUnavailable):
        assert result.kid == kid
        assert result.retry_after >= 0
    else:
        assert result is None or kid in keys.kids
        assert status == 200


# -- what fuzzing found, kept as plain regression tests -------------------------------------------


def test_a_lone_surrogate_in_the_user_json_is_refused_as_the_user_field() -> None:
    # Escaped as a UnicodeEncodeError (while measuring the JSON's size in UTF-8).
    with pytest.raises(InvalidAuthorizationResponse) as info:
        parse_authorization_response({"code": "c.x", "user": '{"email":"a@b.c\ud800"}'})
    assert info.value.field == "user"
    with pytest.raises(InvalidAuthorizationResponse) as info:
        parse_authorization_response({"code": "c.x", "state": "st\udc80"})
    assert info.value.field == "state"


@pytest.mark.parametrize("body", [b"[" * 5000, '{"a":' * 3000])
def test_a_notification_nested_deeper_than_the_stack_is_malformed(
    keys: AppleKeys, body: bytes | str
) -> None:
    # Escaped as a RecursionError from the JSON decoder.
    with pytest.raises(InvalidNotification) as info:
        parse_notification(body, keys, audiences=AUDIENCES, now=NOW)
    assert info.value.reason == "malformed"
