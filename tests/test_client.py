"""AppleClient against a fake Apple (httpx.MockTransport) that checks what it receives."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from appleconnect._client import (
    MAX_RESPONSE_BYTES,
    AppleClient,
    AsyncAppleClient,
    MigrationInfo,
    TokenResponse,
)
from appleconnect._errors import (
    AppleError,
    AppleUnavailable,
    InvalidClient,
    InvalidGrant,
    InvalidIdentityToken,
    InvalidRequest,
    InvalidScope,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from appleconnect._jws import b64url_encode
from appleconnect._secret import ClientSecret

BASE = "https://apple.test"
CLIENT_ID = "com.example.web"
APP_ID = "com.example.app"
TEAM_A = "TEAMAAAAA1"
TEAM_B = "TEAMBBBBB2"
KEY_ID = "KEYID12345"
KID = "TESTKID"
REDIRECT = "https://example.com/apple/callback"
STATE = "x7Qm2sV9kLp4Rt8Zw1Yc"

TOKEN_OK = {
    "access_token": "a1b2c3.0.access",
    "token_type": "Bearer",
    "expires_in": 3600,
    "refresh_token": "r1b2c3.0.refresh",
    "id_token": "eyJ.header.sig",
}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def jwks_for(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {
        "keys": [
            {
                "kty": "RSA",
                "kid": KID,
                "use": "sig",
                "alg": "RS256",
                "n": b64url_encode(n),
                "e": b64url_encode(e),
            }
        ]
    }


class FakeApple:
    """Apple's endpoints as a MockTransport handler. Each route is a function of the request;
    every request is recorded and checked for Apple's transport rules."""

    def __init__(self, ec_key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any] | None = None):
        self.ec_public = ec_key.public_key()
        self.jwks = jwks or {"keys": []}
        self.requests: list[httpx.Request] = []
        self.routes: dict[str, Callable[[httpx.Request], httpx.Response]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/auth/keys":
            return httpx.Response(200, json=self.jwks)
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert request.headers["accept"] == "application/json"
        # A timeout is set on every request.
        timeout = request.extensions["timeout"]
        assert all(value is not None for value in timeout.values())
        return self.routes[request.url.path](request)

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]

    def form(self, request: httpx.Request, *, client_id: str = CLIENT_ID) -> dict[str, str]:
        """The single-valued form; checks that the client secret is Apple-valid for client_id."""
        parsed = parse_qs(request.content.decode("ascii"), keep_blank_values=True)
        assert all(len(v) == 1 for v in parsed.values()), parsed
        form = {k: v[0] for k, v in parsed.items()}
        assert form["client_id"] == client_id
        claims = jwt.decode(
            form["client_secret"],
            self.ec_public,
            algorithms=["ES256"],
            audience="https://appleid.apple.com",
        )
        assert claims["sub"] == client_id
        return form


def respond(status: int = 200, body: Any = TOKEN_OK) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    return handler


def fail_with(exc_type: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return handler


@pytest.fixture
def secret(ec_key: ec.EllipticCurvePrivateKey) -> ClientSecret:
    return ClientSecret(TEAM_A, KEY_ID, CLIENT_ID, pem(ec_key))


@pytest.fixture
def apple(ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> FakeApple:
    return FakeApple(ec_key, jwks_for(rsa_key))


@pytest.fixture
def client(apple: FakeApple, secret: ClientSecret) -> AppleClient:
    return AppleClient(
        CLIENT_ID,
        secret,
        extra_audiences=[APP_ID],
        base_url=BASE,
        http_client=httpx.Client(transport=httpx.MockTransport(apple)),
    )


# -- exchange_code -------------------------------------------------------------------------


def test_exchange_code_sends_apple_form_and_parses_tokens(
    apple: FakeApple, client: AppleClient
) -> None:
    apple.routes["/auth/token"] = respond(body=TOKEN_OK)
    tokens = client.exchange_code("c0de.0.abcd", redirect_uri=REDIRECT)

    (request,) = apple.calls("/auth/token")
    form = apple.form(request)
    assert set(form) == {"client_id", "client_secret", "code", "grant_type", "redirect_uri"}
    assert form["grant_type"] == "authorization_code"
    assert form["code"] == "c0de.0.abcd"
    assert form["redirect_uri"] == REDIRECT
    assert b"redirect_uri=https%3A%2F%2Fexample.com%2Fapple%2Fcallback" in request.content
    assert "authorization" not in request.headers
    assert tokens == TokenResponse(
        access_token="a1b2c3.0.access",
        token_type="Bearer",
        expires_in=3600,
        refresh_token="r1b2c3.0.refresh",
        id_token="eyJ.header.sig",
        raw=TOKEN_OK,
    )
    # Tokens never appear in a repr that might end up in a log.
    assert "a1b2c3" not in repr(tokens)
    assert "r1b2c3" not in repr(tokens)


def test_exchange_native_code_omits_redirect_uri_and_passes_code_verifier(
    apple: FakeApple, client: AppleClient
) -> None:
    apple.routes["/auth/token"] = respond(body=TOKEN_OK)
    client.exchange_code("c0de", code_verifier="v" * 43)
    form = apple.form(apple.calls("/auth/token")[0])
    assert set(form) == {"client_id", "client_secret", "code", "grant_type", "code_verifier"}
    assert form["code_verifier"] == "v" * 43


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("invalid_request", InvalidRequest),
        ("invalid_client", InvalidClient),
        ("invalid_grant", InvalidGrant),
        ("unauthorized_client", UnauthorizedClient),
        ("unsupported_grant_type", UnsupportedGrantType),
        ("invalid_scope", InvalidScope),
    ],
)
def test_each_apple_error_code_maps_to_its_subclass(
    apple: FakeApple,
    client: AppleClient,
    code: str,
    cls: type[AppleError],
    caplog: pytest.LogCaptureFixture,
) -> None:
    apple.routes["/auth/token"] = respond(
        400, {"error": code, "error_description": "The code has expired or has been revoked."}
    )
    with caplog.at_level(logging.WARNING, logger="appleconnect"), pytest.raises(cls) as exc:
        client.exchange_code("c0de-secret-value", redirect_uri=REDIRECT)
    assert type(exc.value) is cls
    assert exc.value.error == code
    assert exc.value.error_description == "The code has expired or has been revoked."
    assert exc.value.status_code == 400
    assert "The code has expired or has been revoked." in str(exc.value)
    # Apple's reason is logged in one line, without the code or the client secret.
    assert code in caplog.text
    assert "The code has expired or has been revoked." in caplog.text
    assert "c0de-secret-value" not in caplog.text
    sent_secret = apple.form(apple.calls("/auth/token")[0])["client_secret"]
    assert sent_secret not in caplog.text


def test_unknown_error_code_is_the_base_apple_error(apple: FakeApple, client: AppleClient) -> None:
    apple.routes["/auth/token"] = respond(400, {"error": "temporarily_unavailable"})
    with pytest.raises(AppleError) as exc:
        client.exchange_code("c0de")
    assert type(exc.value) is AppleError
    assert exc.value.error == "temporarily_unavailable"
    assert exc.value.error_description is None


def test_invalid_client_message_lists_the_usual_causes(
    apple: FakeApple, client: AppleClient
) -> None:
    apple.routes["/auth/token"] = respond(400, {"error": "invalid_client"})
    with pytest.raises(InvalidClient) as exc:
        client.exchange_code("c0de")
    assert "appleconnect doctor" in str(exc.value)
    assert "15,777,000" in str(exc.value)


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (500, b"", "HTTP 500"),
        (503, b"<html>down</html>", "HTTP 503"),
        (400, b"<html>Bad Request</html>", "HTTP 400"),
        (429, b"", "throttled"),
        (302, b"", "HTTP 302"),
        (200, b"<html>not json</html>", "not a JSON object"),
        (200, b"[1, 2]", "not a JSON object"),
        (200, b'{"access_token": NaN}', "not a JSON object"),
        (200, json.dumps({**TOKEN_OK, "access_token": 5}).encode(), "access_token"),
        (200, json.dumps({**TOKEN_OK, "access_token": ""}).encode(), "access_token"),
        (200, json.dumps({"token_type": "Bearer", "expires_in": 1}).encode(), "access_token"),
        (200, json.dumps({**TOKEN_OK, "expires_in": "3600"}).encode(), "expires_in"),
        (200, json.dumps({**TOKEN_OK, "expires_in": True}).encode(), "expires_in"),
        (200, json.dumps({**TOKEN_OK, "refresh_token": 7}).encode(), "refresh_token"),
        (200, json.dumps({**TOKEN_OK, "token_type": None}).encode(), "token_type"),
    ],
)
def test_unusable_answers_are_apple_unavailable_naming_the_endpoint(
    apple: FakeApple, client: AppleClient, status: int, body: bytes, words: str
) -> None:
    apple.routes["/auth/token"] = respond(status, body)
    with pytest.raises(AppleUnavailable) as exc:
        client.exchange_code("c0de")
    message = str(exc.value)
    assert "token endpoint" in message
    assert words in message


def test_float_expires_in_that_is_integral_is_accepted(
    apple: FakeApple, client: AppleClient
) -> None:
    apple.routes["/auth/token"] = respond(body={**TOKEN_OK, "expires_in": 3600.0})
    assert client.exchange_code("c0de").expires_in == 3600


def test_oversized_body_is_refused_whether_declared_or_streamed(
    apple: FakeApple, client: AppleClient
) -> None:
    big = b"{" + b" " * MAX_RESPONSE_BYTES + b"}"
    apple.routes["/auth/token"] = respond(200, big)
    with pytest.raises(AppleUnavailable, match="larger than 65536 bytes"):
        client.exchange_code("c0de")

    def streamed(request: httpx.Request) -> httpx.Response:
        # No Content-Length: the cap must hold while reading.
        return httpx.Response(200, content=iter([b" " * 40_000] * 3))

    apple.routes["/auth/token"] = streamed
    with pytest.raises(AppleUnavailable, match="larger than 65536 bytes"):
        client.exchange_code("c0de")


@pytest.mark.parametrize(
    ("exc_type", "words"),
    [
        (httpx.ConnectError, "Could not connect"),
        (httpx.ConnectTimeout, "Could not connect"),
        (httpx.ReadTimeout, "did not answer in time"),
        (httpx.RemoteProtocolError, "failed"),
    ],
)
def test_code_exchange_is_never_retried(
    apple: FakeApple, client: AppleClient, exc_type: type[httpx.TransportError], words: str
) -> None:
    apple.routes["/auth/token"] = fail_with(exc_type)
    with pytest.raises(AppleUnavailable) as exc:
        client.exchange_code("c0de")
    assert len(apple.calls("/auth/token")) == 1
    assert words in str(exc.value)
    assert "token endpoint (authorization_code)" in str(exc.value)
    assert isinstance(exc.value.__cause__, exc_type)


def test_code_exchange_timeout_says_not_to_reuse_the_code(
    apple: FakeApple, client: AppleClient
) -> None:
    apple.routes["/auth/token"] = fail_with(httpx.ReadTimeout)
    with pytest.raises(AppleUnavailable, match="do not retry with it"):
        client.exchange_code("c0de")


def test_5xx_on_exchange_is_not_retried(apple: FakeApple, client: AppleClient) -> None:
    apple.routes["/auth/token"] = respond(503, b"")
    with pytest.raises(AppleUnavailable):
        client.exchange_code("c0de")
    assert len(apple.calls("/auth/token")) == 1


@pytest.mark.parametrize("bad", ["", " c0de", "c0de\n", "x" * 20_000])
def test_exchange_refuses_bad_code_arguments_before_calling_apple(
    apple: FakeApple, client: AppleClient, bad: str
) -> None:
    with pytest.raises(ValueError, match="code"):
        client.exchange_code(bad)
    assert apple.requests == []


# -- refresh -------------------------------------------------------------------------------


def test_refresh_sends_refresh_grant_and_returns_no_refresh_token(
    apple: FakeApple, client: AppleClient
) -> None:
    answer = {k: v for k, v in TOKEN_OK.items() if k != "refresh_token"}
    apple.routes["/auth/token"] = respond(body=answer)
    tokens = client.refresh("r1b2c3.0.refresh")
    form = apple.form(apple.calls("/auth/token")[0])
    assert set(form) == {"client_id", "client_secret", "grant_type", "refresh_token"}
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == "r1b2c3.0.refresh"
    assert tokens.refresh_token is None
    assert tokens.access_token == "a1b2c3.0.access"
    assert tokens.id_token == "eyJ.header.sig"


def test_refresh_without_id_token_is_accepted(apple: FakeApple, client: AppleClient) -> None:
    apple.routes["/auth/token"] = respond(
        body={"access_token": "at", "token_type": "Bearer", "expires_in": 3600}
    )
    tokens = client.refresh("r1")
    assert tokens.id_token is None
    assert tokens.refresh_token is None


def test_refresh_revoked_is_invalid_grant(apple: FakeApple, client: AppleClient) -> None:
    apple.routes["/auth/token"] = respond(
        400,
        {
            "error": "invalid_grant",
            "error_description": "The token has expired or has been revoked.",
        },
    )
    with pytest.raises(InvalidGrant) as exc:
        client.refresh("r1")
    assert exc.value.error == "invalid_grant"
    assert exc.value.error_description == "The token has expired or has been revoked."
    assert len(apple.calls("/auth/token")) == 1


def test_refresh_retries_once_when_the_connection_failed(
    apple: FakeApple, client: AppleClient
) -> None:
    outcomes: list[Callable[[httpx.Request], httpx.Response]] = [
        fail_with(httpx.ConnectError),
        respond(body={"access_token": "at", "token_type": "Bearer", "expires_in": 3600}),
    ]
    apple.routes["/auth/token"] = lambda request: outcomes.pop(0)(request)
    assert client.refresh("r1").access_token == "at"
    assert len(apple.calls("/auth/token")) == 2


def test_refresh_does_not_retry_a_read_timeout(apple: FakeApple, client: AppleClient) -> None:
    apple.routes["/auth/token"] = fail_with(httpx.ReadTimeout)
    with pytest.raises(AppleUnavailable):
        client.refresh("r1")
    assert len(apple.calls("/auth/token")) == 1


# -- revoke --------------------------------------------------------------------------------


def test_revoke_empty_200_is_success(apple: FakeApple, client: AppleClient) -> None:
    apple.routes["/auth/revoke"] = respond(200, b"")
    client.revoke("r1b2c3.0.refresh")  # returns on Apple's empty 200
    form = apple.form(apple.calls("/auth/revoke")[0])
    assert form == {
        "client_id": CLIENT_ID,
        "client_secret": form["client_secret"],
        "token": "r1b2c3.0.refresh",
        "token_type_hint": "refresh_token",
    }


def test_revoke_access_token_hint(apple: FakeApple, client: AppleClient) -> None:
    apple.routes["/auth/revoke"] = respond(200, b"")
    client.revoke("a1", token_type_hint="access_token")
    assert apple.form(apple.calls("/auth/revoke")[0])["token_type_hint"] == "access_token"


@pytest.mark.parametrize("hint", ["id_token", "", "refresh"])
def test_revoke_refuses_other_hints(apple: FakeApple, client: AppleClient, hint: str) -> None:
    with pytest.raises(ValueError, match="invalid_client"):
        client.revoke("t", token_type_hint=hint)  # type: ignore[arg-type]
    assert apple.requests == []


def test_revoke_refusal_and_no_retry(apple: FakeApple, client: AppleClient) -> None:
    apple.routes["/auth/revoke"] = respond(400, {"error": "invalid_request"})
    with pytest.raises(InvalidRequest):
        client.revoke("t")
    apple.routes["/auth/revoke"] = fail_with(httpx.ConnectError)
    with pytest.raises(AppleUnavailable, match="revoke endpoint"):
        client.revoke("t")
    assert len(apple.calls("/auth/revoke")) == 2  # one per call, none retried


# -- user migration ------------------------------------------------------------------------


def migration_handler(apple: FakeApple, *, client_id: str = CLIENT_ID, counter: list[int]) -> None:
    """Token endpoint answering client_credentials with numbered access tokens."""

    def token(request: httpx.Request) -> httpx.Response:
        form = apple.form(request, client_id=client_id)
        assert form == {
            "client_id": client_id,
            "client_secret": form["client_secret"],
            "grant_type": "client_credentials",
            "scope": "user.migration",
        }
        counter.append(1)
        return httpx.Response(
            200,
            json={"access_token": f"mig{len(counter)}", "token_type": "Bearer", "expires_in": 3600},
        )

    apple.routes["/auth/token"] = token


def test_migration_both_teams_with_bearer(
    apple: FakeApple, client: AppleClient, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    fetched: list[int] = []
    migration_handler(apple, counter=fetched)

    def migration(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer mig1"
        form = apple.form(request)
        if "transfer_sub" in form:
            assert set(form) == {"transfer_sub", "client_id", "client_secret"}
            assert form["transfer_sub"] == "760417.ebbf12.1827"
            return httpx.Response(
                200,
                json={
                    "sub": "820417.faa325.0219",
                    "email": "new@privaterelay.appleid.com",
                    "is_private_email": "true",
                },
            )
        assert set(form) == {"sub", "target", "client_id", "client_secret"}
        assert form["sub"] == "001234.abc.1234"
        assert form["target"] == TEAM_B
        return httpx.Response(200, json={"transfer_sub": "760417.ebbf12.1827"})

    apple.routes["/auth/usermigrationinfo"] = migration

    # Team A, the sender.
    transfer_sub = client.transfer_sub_for("001234.abc.1234", TEAM_B)
    assert transfer_sub == "760417.ebbf12.1827"

    # Team B, the recipient: its own key and secret for the same (transferred) client id.
    team_b_secret = ClientSecret(TEAM_B, KEY_ID, CLIENT_ID, pem(ec_key))
    with AppleClient(
        CLIENT_ID,
        team_b_secret,
        base_url=BASE,
        http_client=httpx.Client(transport=httpx.MockTransport(apple)),
    ) as team_b:
        fetched.clear()
        info = team_b.sub_for_transfer(transfer_sub)
    assert info == MigrationInfo(
        sub="820417.faa325.0219",
        email="new@privaterelay.appleid.com",
        is_private_email=True,
        raw=info.raw,
    )
    assert "new@" not in repr(info)
    team_b_form = apple.form(apple.calls("/auth/usermigrationinfo")[-1])
    assert (
        jwt.decode(team_b_form["client_secret"], options={"verify_signature": False})["iss"]
        == TEAM_B
    )


def test_migration_access_token_is_cached_until_shortly_before_expiry(
    apple: FakeApple, secret: ClientSecret
) -> None:
    fetched: list[int] = []
    migration_handler(apple, counter=fetched)
    apple.routes["/auth/usermigrationinfo"] = respond(body={"transfer_sub": "ts"})
    now = [1_000_000.0]
    client = AppleClient(
        CLIENT_ID,
        secret,
        base_url=BASE,
        http_client=httpx.Client(transport=httpx.MockTransport(apple)),
        clock=lambda: now[0],
    )
    assert client.migration_access_token() == "mig1"
    client.transfer_sub_for("s1", TEAM_B)
    client.transfer_sub_for("s2", TEAM_B)
    assert len(fetched) == 1
    bearers = [r.headers["authorization"] for r in apple.calls("/auth/usermigrationinfo")]
    assert bearers == ["Bearer mig1", "Bearer mig1"]

    now[0] += 3600 - 61  # still more than the margin left
    assert client.migration_access_token() == "mig1"
    now[0] += 2  # within a minute of expiry: fetch a fresh one
    assert client.migration_access_token() == "mig2"
    assert len(fetched) == 2


def test_migration_with_a_users_access_token_skips_the_token_fetch(
    apple: FakeApple, client: AppleClient
) -> None:
    apple.routes["/auth/usermigrationinfo"] = respond(body={"sub": "new.sub"})
    info = client.sub_for_transfer("ts", access_token="user-access-token")
    assert info.sub == "new.sub"
    assert info.email is None
    assert info.is_private_email is None
    assert apple.calls("/auth/token") == []
    request = apple.calls("/auth/usermigrationinfo")[0]
    assert request.headers["authorization"] == "Bearer user-access-token"


def test_migration_token_fetch_retries_once_on_connection_error(
    apple: FakeApple, client: AppleClient
) -> None:
    outcomes: list[Callable[[httpx.Request], httpx.Response]] = [
        fail_with(httpx.ConnectError),
        respond(body={"access_token": "m", "token_type": "Bearer", "expires_in": 3600}),
    ]
    apple.routes["/auth/token"] = lambda request: outcomes.pop(0)(request)
    assert client.migration_access_token() == "m"
    assert len(apple.calls("/auth/token")) == 2

    apple.routes["/auth/token"] = fail_with(httpx.ConnectError)
    client._migration_token = None
    with pytest.raises(AppleUnavailable, match="client_credentials"):
        client.migration_access_token()
    assert len(apple.calls("/auth/token")) == 4  # two more: one retry, no more


def test_migration_refusal_drops_the_cached_token(apple: FakeApple, client: AppleClient) -> None:
    fetched: list[int] = []
    migration_handler(apple, counter=fetched)
    apple.routes["/auth/usermigrationinfo"] = respond(
        400, {"error": "invalid_request", "error_description": "bad transfer_sub"}
    )
    with pytest.raises(InvalidRequest) as exc:
        client.sub_for_transfer("ts")
    assert exc.value.error_description == "bad transfer_sub"
    apple.routes["/auth/usermigrationinfo"] = respond(body={"sub": "s"})
    client.sub_for_transfer("ts")
    assert len(fetched) == 2
    assert apple.calls("/auth/usermigrationinfo")[-1].headers["authorization"] == "Bearer mig2"


@pytest.mark.parametrize(
    ("target", "words"),
    [("TEAMB", "10-character"), ("teambbbbb2", "10-character"), (TEAM_A, "own team")],
)
def test_transfer_target_is_checked(
    apple: FakeApple, client: AppleClient, target: str, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        client.transfer_sub_for("s", target, access_token="a")
    assert apple.requests == []


def test_migration_answers_are_validated(apple: FakeApple, client: AppleClient) -> None:
    apple.routes["/auth/usermigrationinfo"] = respond(body={"transfer_sub": 12})
    with pytest.raises(AppleUnavailable, match="transfer_sub"):
        client.transfer_sub_for("s", TEAM_B, access_token="a")
    apple.routes["/auth/usermigrationinfo"] = respond(body={"sub": "s", "is_private_email": "yes"})
    with pytest.raises(AppleUnavailable, match="is_private_email"):
        client.sub_for_transfer("ts", access_token="a")


# -- authorization_url ---------------------------------------------------------------------


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def test_authorization_url_defaults_to_form_post_with_name_and_email(
    client: AppleClient,
) -> None:
    url = client.authorization_url(REDIRECT, state=STATE, nonce="n0nce-" + "q8Zr2Lp5Wx")
    assert url.startswith(f"{BASE}/auth/authorize?")
    assert "scope=name%20email" in url
    assert "redirect_uri=https%3A%2F%2Fexample.com%2Fapple%2Fcallback" in url
    assert "+" not in url
    assert query_of(url) == {
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT],
        "response_type": ["code"],
        "response_mode": ["form_post"],
        "state": [STATE],
        "scope": ["name email"],
        "nonce": ["n0nce-q8Zr2Lp5Wx"],
    }


def test_authorization_url_code_id_token_is_percent_encoded(client: AppleClient) -> None:
    url = client.authorization_url(REDIRECT, state=STATE, response_type="code id_token")
    assert "response_type=code%20id_token" in url
    assert query_of(url)["response_mode"] == ["form_post"]
    url = client.authorization_url(
        REDIRECT, state=STATE, scope=(), response_type="id_token code", response_mode="fragment"
    )
    assert query_of(url)["response_type"] == ["code id_token"]
    assert query_of(url)["response_mode"] == ["fragment"]


def test_authorization_url_without_scope_uses_query(client: AppleClient) -> None:
    url = client.authorization_url(REDIRECT, state=STATE, scope=None)
    assert "scope" not in query_of(url)
    assert query_of(url)["response_mode"] == ["query"]
    assert query_of(client.authorization_url(REDIRECT, state=STATE, scope="email"))["scope"] == [
        "email"
    ]


@pytest.mark.parametrize("mode", ["query", "fragment"])
def test_scopes_force_form_post(client: AppleClient, mode: str) -> None:
    with pytest.raises(ValueError, match="form_post"):
        client.authorization_url(REDIRECT, state=STATE, response_mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"response_type": "id_token", "scope": ()}, "not support"),
        ({"response_type": "token"}, "'code' or 'code id_token'"),
        ({"response_type": "code id_token", "scope": (), "response_mode": "query"}, "fragment"),
        ({"response_mode": "web_message"}, "response_mode must be"),
        ({"scope": ("names",)}, "Unknown scope 'names'"),
        ({"scope": ("name", "profile")}, "Unknown scope 'profile'"),
    ],
)
def test_authorization_url_refuses_what_apple_refuses(
    client: AppleClient, kwargs: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        client.authorization_url(REDIRECT, state=STATE, **kwargs)


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (None, "required"),
        ("", "required"),
        ("short-state", "at least 16"),
        ("a" * 32, "looks constant"),
        ("state" * 4, "looks constant"),
        ("abcabcabcabcabcabc", "looks constant"),
        ("abcdefghijklmnopqrstuvwxyz", "looks constant"),
        ("0000111100001111", "looks constant"),
        ("has spaces in it, sixteen+", "spaces"),
        ("x" * 2000, "longer than"),
    ],
)
def test_authorization_url_refuses_weak_state(client: AppleClient, state: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        client.authorization_url(REDIRECT, state=state)


def test_random_states_are_accepted(client: AppleClient) -> None:
    # Drawn by secrets.token_hex(8): five distinct digits, refused by an earlier heuristic.
    client.authorization_url(REDIRECT, state="d602d062fdd2d06f")
    for _ in range(200):
        client.authorization_url(REDIRECT, state=secrets.token_urlsafe(16))
        client.authorization_url(REDIRECT, state=secrets.token_hex(8))


def test_weak_nonce_is_refused(client: AppleClient) -> None:
    with pytest.raises(ValueError, match="nonce"):
        client.authorization_url(REDIRECT, state=STATE, nonce="nonce")


@pytest.mark.parametrize(
    ("redirect_uri", "words"),
    [
        ("http://example.com/cb", "HTTPS"),
        ("https://localhost/cb", "localhost"),
        ("https://app.localhost/cb", "localhost"),
        ("https://192.168.1.10/cb", "IP address"),
        ("https://[::1]/cb", "IP address"),
        ("https://example.com/cb#frag", "fragment"),
        ("/relative/cb", "absolute"),
        ("https://example.com/c b", "spaces"),
    ],
)
def test_redirect_uri_rules_against_apple(
    secret: ClientSecret, redirect_uri: str, words: str
) -> None:
    with AppleClient(CLIENT_ID, secret) as real:
        assert real.base_url == "https://appleid.apple.com"
        with pytest.raises(ValueError, match=words):
            real.authorization_url(redirect_uri, state=STATE)


def test_emulator_base_url_allows_local_http_redirects(secret: ClientSecret) -> None:
    with AppleClient(CLIENT_ID, secret, base_url="http://127.0.0.1:8080/") as sandbox:
        url = sandbox.authorization_url("http://localhost:8000/cb", state=STATE)
    assert url.startswith("http://127.0.0.1:8080/auth/authorize?")


# -- construction and the client secret ----------------------------------------------------


def make_secret_string(ec_key: ec.EllipticCurvePrivateKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": TEAM_A,
        "iat": now,
        "exp": now + 3600,
        "aud": "https://appleid.apple.com",
        "sub": CLIENT_ID,
    }
    payload.update(claims)
    return jwt.encode(payload, ec_key, algorithm="ES256", headers={"kid": KEY_ID})


def test_premade_secret_string_is_sent_and_its_expiry_exposed(
    apple: FakeApple, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = make_secret_string(ec_key)
    apple.routes["/auth/token"] = respond(body=TOKEN_OK)
    with AppleClient(
        CLIENT_ID,
        token,
        base_url=BASE,
        http_client=httpx.Client(transport=httpx.MockTransport(apple)),
    ) as client:
        expires_at = client.client_secret_expires_at
        assert expires_at is not None
        assert abs(expires_at - (time.time() + 3600)) < 60
        client.exchange_code("c")
    assert apple.form(apple.calls("/auth/token")[0])["client_secret"] == token


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"sub": "com.example.other"}, "sub is 'com.example.other'"),
        ({"aud": "https://account.apple.com"}, "aud"),
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"exp": int(time.time()) + 16_000_000}, "15777000"),
    ],
)
def test_premade_secret_string_is_checked(
    ec_key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        AppleClient(CLIENT_ID, make_secret_string(ec_key, **claims), base_url=BASE)


def test_premade_secret_that_expires_later_is_refused_before_calling_apple(
    apple: FakeApple, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    now = [time.time()]
    client = AppleClient(
        CLIENT_ID,
        make_secret_string(ec_key),
        base_url=BASE,
        http_client=httpx.Client(transport=httpx.MockTransport(apple)),
        clock=lambda: now[0],
    )
    now[0] += 7200
    with pytest.raises(ValueError, match="expired"):
        client.refresh("r1")
    assert apple.requests == []


def test_pasted_secret_string_is_stripped(
    apple: FakeApple, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = make_secret_string(ec_key)
    apple.routes["/auth/token"] = respond(body=TOKEN_OK)
    client = AppleClient(
        CLIENT_ID,
        f' "{token}"\n',
        base_url=BASE,
        http_client=httpx.Client(transport=httpx.MockTransport(apple)),
    )
    client.refresh("r1")
    assert apple.form(apple.calls("/auth/token")[0])["client_secret"] == token
    with pytest.raises(ValueError, match="spaces or line breaks"):
        AppleClient(CLIENT_ID, "abc def", base_url=BASE)
    with pytest.raises(ValueError, match="empty"):
        AppleClient(CLIENT_ID, "  ", base_url=BASE)


def test_opaque_secret_string_is_accepted_without_expiry() -> None:
    with AppleClient(CLIENT_ID, "not-a-jwt", base_url=BASE) as client:
        assert client.client_secret_expires_at is None


def test_client_secret_for_another_client_id_is_refused(secret: ClientSecret) -> None:
    with pytest.raises(ValueError, match="with_client_id"):
        AppleClient(APP_ID, secret)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"extra_audiences": APP_ID}, TypeError),
        ({"timeout": None}, ValueError),
        ({"timeout": 0}, ValueError),
        ({"base_url": "appleid.apple.com"}, ValueError),
        ({"base_url": "https://appleid.apple.com/?x=1"}, ValueError),
    ],
)
def test_configuration_mistakes_are_refused(
    secret: ClientSecret, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        AppleClient(CLIENT_ID, secret, **kwargs)


def test_client_id_containing_team_id_is_refused(secret: ClientSecret) -> None:
    with pytest.raises(ValueError, match="Team ID"):
        AppleClient(f"{TEAM_A}.{CLIENT_ID}", "opaque", extra_audiences=[], base_url=BASE)
    with pytest.raises(ValueError, match="Team ID"):
        AppleClient(CLIENT_ID, secret, extra_audiences=[f"{TEAM_A}.{APP_ID}"])


def test_audiences_are_client_id_then_extras(secret: ClientSecret) -> None:
    with AppleClient(CLIENT_ID, secret, extra_audiences=[APP_ID, CLIENT_ID]) as client:
        assert client.audiences == (CLIENT_ID, APP_ID)


def test_context_manager_closes_only_what_it_created(secret: ClientSecret) -> None:
    injected = httpx.Client()
    with AppleClient(CLIENT_ID, secret, http_client=injected) as client:
        pass
    assert not injected.is_closed
    assert not client._http.is_closed
    injected.close()
    with AppleClient(CLIENT_ID, secret) as owned:
        pass
    assert owned._http.is_closed


async def test_async_http_client_in_async_class_only(secret: ClientSecret) -> None:
    async with httpx.AsyncClient() as async_http:
        with pytest.raises(TypeError, match="AsyncAppleClient"):
            AppleClient(CLIENT_ID, secret, http_client=async_http)  # type: ignore[arg-type]
    with httpx.Client() as sync_http, pytest.raises(TypeError, match="AppleClient"):
        AsyncAppleClient(CLIENT_ID, secret, http_client=sync_http)  # type: ignore[arg-type]


# -- verify_identity_token -----------------------------------------------------------------


def id_token(rsa_key: rsa.RSAPrivateKey, now: int, **claims: Any) -> str:
    payload = {
        "iss": "https://appleid.apple.com",
        "aud": CLIENT_ID,
        "exp": now + 600,
        "iat": now,
        "sub": "001234.abc.1234",
        "email": "u@privaterelay.appleid.com",
        "email_verified": "true",
    }
    payload.update(claims)
    return jwt.encode(payload, rsa_key, algorithm="RS256", headers={"kid": KID})


def test_verify_identity_token_uses_own_keys_and_audiences(
    apple: FakeApple, client: AppleClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    identity = client.verify_identity_token(id_token(rsa_key, now, nonce="n" * 20), nonce="n" * 20)
    assert identity.sub == "001234.abc.1234"
    assert identity.email_verified is True
    # The App ID is an extra audience: a native app's token verifies too.
    assert client.verify_identity_token(id_token(rsa_key, now, aud=APP_ID)).audience == APP_ID
    # Keys were fetched once, from the same base URL, through the same HTTP client.
    assert [r.url for r in apple.calls("/auth/keys")] == [httpx.URL(f"{BASE}/auth/keys")]

    with pytest.raises(InvalidIdentityToken) as exc:
        client.verify_identity_token(id_token(rsa_key, now, aud="com.attacker.app"))
    assert exc.value.reason == "aud"


def test_verify_identity_token_uses_the_injected_clock(
    apple: FakeApple, secret: ClientSecret, rsa_key: rsa.RSAPrivateKey
) -> None:
    issued = 1_700_000_000
    client = AppleClient(
        CLIENT_ID,
        secret,
        base_url=BASE,
        http_client=httpx.Client(transport=httpx.MockTransport(apple)),
        clock=lambda: issued + 60.0,
    )
    assert client.verify_identity_token(id_token(rsa_key, issued)).issued_at == issued
    with pytest.raises(InvalidIdentityToken) as exc:
        client.verify_identity_token(id_token(rsa_key, issued), now=issued + 3600)
    assert exc.value.reason == "exp"


def test_client_secret_is_exposed_for_expiry_display(secret: ClientSecret) -> None:
    with AppleClient(CLIENT_ID, secret, base_url=BASE) as client:
        assert client.client_secret is secret
        assert client.client_secret_expires_at is None  # a ClientSecret re-mints itself
    with AppleClient(CLIENT_ID, "not-a-jwt", base_url=BASE) as client:
        assert client.client_secret == "not-a-jwt"
