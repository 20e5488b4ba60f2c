"""AsyncAppleClient: the same behaviour as AppleClient, through httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from appleconnect._client import AppleClient, AsyncAppleClient, MigrationInfo
from appleconnect._errors import (
    AppleUnavailable,
    InvalidClient,
    InvalidGrant,
    InvalidIdentityToken,
    InvalidRequest,
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
    "access_token": "at.0.access",
    "token_type": "Bearer",
    "expires_in": 3600,
    "refresh_token": "rt.0.refresh",
    "id_token": "eyJ.header.sig",
}

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class FakeApple:
    """Apple's endpoints for an httpx.AsyncClient MockTransport; checks every request."""

    def __init__(self, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> None:
        self.ec_public = ec_key.public_key()
        numbers = rsa_key.public_key().public_numbers()
        self.jwks = {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": KID,
                    "alg": "RS256",
                    "use": "sig",
                    "n": b64url_encode(numbers.n.to_bytes(256, "big")),
                    "e": b64url_encode(numbers.e.to_bytes(3, "big")),
                }
            ]
        }
        self.requests: list[httpx.Request] = []
        self.routes: dict[str, Handler] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await asyncio.sleep(0)  # let concurrent callers interleave
        if request.url.path == "/auth/keys":
            return httpx.Response(200, json=self.jwks)
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert request.headers["accept"] == "application/json"
        assert all(v is not None for v in request.extensions["timeout"].values())
        return self.routes[request.url.path](request)

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]

    def form(self, request: httpx.Request) -> dict[str, str]:
        parsed = parse_qs(request.content.decode("ascii"), keep_blank_values=True)
        assert all(len(v) == 1 for v in parsed.values())
        form = {k: v[0] for k, v in parsed.items()}
        claims = jwt.decode(
            form["client_secret"],
            self.ec_public,
            algorithms=["ES256"],
            audience="https://appleid.apple.com",
        )
        assert claims["sub"] == form["client_id"] == CLIENT_ID
        return form


def respond(status: int = 200, body: Any = TOKEN_OK) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    return handler


def fail_with(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return handler


@pytest.fixture
def apple(ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> FakeApple:
    return FakeApple(ec_key, rsa_key)


def make_client(
    apple: FakeApple,
    ec_key: ec.EllipticCurvePrivateKey,
    team_id: str = TEAM_A,
    **kwargs: Any,
) -> AsyncAppleClient:
    return AsyncAppleClient(
        CLIENT_ID,
        ClientSecret(team_id, KEY_ID, CLIENT_ID, pem(ec_key)),
        extra_audiences=[APP_ID],
        base_url=BASE,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(apple)),
        **kwargs,
    )


@pytest.fixture
def client(apple: FakeApple, ec_key: ec.EllipticCurvePrivateKey) -> AsyncAppleClient:
    return make_client(apple, ec_key)


def test_same_public_surface_as_the_sync_client() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(getattr(cls, name))
            for name in dir(cls)
            if not name.startswith("_") and callable(getattr(cls, name))
        }

    sync_api, async_api = public(AppleClient), public(AsyncAppleClient)
    assert set(sync_api) - {"close"} == set(async_api) - {"aclose"}
    for name in set(sync_api) - {"close"}:
        sync_params = [p for p in sync_api[name].parameters.values() if p.name != "http_client"]
        async_params = [p for p in async_api[name].parameters.values() if p.name != "http_client"]
        assert [p.name for p in sync_params] == [p.name for p in async_params], name
    assert not inspect.iscoroutinefunction(AsyncAppleClient.authorization_url)
    assert inspect.iscoroutinefunction(AsyncAppleClient.exchange_code)


async def test_exchange_code(apple: FakeApple, client: AsyncAppleClient) -> None:
    apple.routes["/auth/token"] = respond(body=TOKEN_OK)
    async with client:
        tokens = await client.exchange_code("c0de", redirect_uri=REDIRECT)
    form = apple.form(apple.calls("/auth/token")[0])
    assert form == {
        "client_id": CLIENT_ID,
        "client_secret": form["client_secret"],
        "grant_type": "authorization_code",
        "code": "c0de",
        "redirect_uri": REDIRECT,
    }
    assert tokens.access_token == "at.0.access"
    assert tokens.refresh_token == "rt.0.refresh"
    assert tokens.expires_in == 3600


@pytest.mark.parametrize(
    ("code", "cls"), [("invalid_grant", InvalidGrant), ("invalid_client", InvalidClient)]
)
async def test_apple_errors_map_to_subclasses(
    apple: FakeApple, client: AsyncAppleClient, code: str, cls: type[Exception]
) -> None:
    apple.routes["/auth/token"] = respond(
        400, {"error": code, "error_description": "The code has already been used."}
    )
    with pytest.raises(cls) as exc:
        await client.exchange_code("c0de")
    assert exc.value.error == code  # type: ignore[attr-defined]
    assert exc.value.error_description == "The code has already been used."  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "handler",
    [
        respond(502, b"Bad Gateway"),
        respond(200, b"{truncated"),
        respond(200, {"token_type": "Bearer"}),
        fail_with(httpx.ReadTimeout),
        fail_with(httpx.ConnectError),
    ],
)
async def test_exchange_failures_are_unavailable_and_never_retried(
    apple: FakeApple, client: AsyncAppleClient, handler: Handler
) -> None:
    apple.routes["/auth/token"] = handler
    with pytest.raises(AppleUnavailable, match="token endpoint"):
        await client.exchange_code("c0de")
    assert len(apple.calls("/auth/token")) == 1


async def test_oversized_streamed_body(apple: FakeApple, client: AsyncAppleClient) -> None:
    async def chunks() -> Any:
        for _ in range(3):
            yield b" " * 40_000

    apple.routes["/auth/token"] = lambda request: httpx.Response(200, content=chunks())
    with pytest.raises(AppleUnavailable, match="larger than"):
        await client.exchange_code("c0de")


async def test_refresh_has_no_refresh_token_and_retries_only_connect_errors(
    apple: FakeApple, client: AsyncAppleClient
) -> None:
    answers: list[Handler] = [
        fail_with(httpx.ConnectError),
        respond(body={"access_token": "a2", "token_type": "Bearer", "expires_in": 3600}),
    ]
    apple.routes["/auth/token"] = lambda request: answers.pop(0)(request)
    tokens = await client.refresh("rt.0.refresh")
    assert tokens.refresh_token is None
    assert tokens.access_token == "a2"
    assert len(apple.calls("/auth/token")) == 2
    form = apple.form(apple.calls("/auth/token")[1])
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == "rt.0.refresh"


async def test_revoke(apple: FakeApple, client: AsyncAppleClient) -> None:
    apple.routes["/auth/revoke"] = respond(200, b"")
    await client.revoke("rt", token_type_hint="refresh_token")
    form = apple.form(apple.calls("/auth/revoke")[0])
    assert (form["token"], form["token_type_hint"]) == ("rt", "refresh_token")
    with pytest.raises(ValueError, match="invalid_client"):
        await client.revoke("idt", token_type_hint="id_token")  # type: ignore[arg-type]
    apple.routes["/auth/revoke"] = fail_with(httpx.ConnectError)
    with pytest.raises(AppleUnavailable, match="revoke endpoint"):
        await client.revoke("rt")
    assert len(apple.calls("/auth/revoke")) == 2


async def test_migration_both_teams_with_bearer_and_one_shared_token_fetch(
    apple: FakeApple, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    fetched: list[str] = []

    def token(request: httpx.Request) -> httpx.Response:
        form = apple.form(request)
        assert (form["grant_type"], form["scope"]) == ("client_credentials", "user.migration")
        fetched.append(form["client_secret"])
        return httpx.Response(
            200,
            json={"access_token": f"mig{len(fetched)}", "token_type": "Bearer", "expires_in": 3600},
        )

    def migration(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer mig1"
        form = apple.form(request)
        if "target" in form:
            assert form["target"] == TEAM_B
            return httpx.Response(200, json={"transfer_sub": f"t.{form['sub']}"})
        return httpx.Response(200, json={"sub": "new.sub", "is_private_email": False})

    apple.routes["/auth/token"] = token
    apple.routes["/auth/usermigrationinfo"] = migration

    async with make_client(apple, ec_key) as team_a:
        transfer_subs = await asyncio.gather(
            *(team_a.transfer_sub_for(f"s{i}", TEAM_B) for i in range(5))
        )
    assert transfer_subs == [f"t.s{i}" for i in range(5)]
    assert len(fetched) == 1  # concurrent callers shared one access-token fetch

    fetched.clear()
    async with make_client(apple, ec_key, team_id=TEAM_B) as team_b:
        info = await team_b.sub_for_transfer("t.s0")
    assert info == MigrationInfo(sub="new.sub", email=None, is_private_email=False, raw=info.raw)
    assert jwt.decode(fetched[0], options={"verify_signature": False})["iss"] == TEAM_B


async def test_migration_refusal(apple: FakeApple, client: AsyncAppleClient) -> None:
    apple.routes["/auth/usermigrationinfo"] = respond(400, {"error": "invalid_request"})
    with pytest.raises(InvalidRequest):
        await client.sub_for_transfer("ts", access_token="user-at")
    assert apple.calls("/auth/token") == []


async def test_verify_identity_token_async(
    apple: FakeApple, client: AsyncAppleClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    claims = {
        "iss": "https://appleid.apple.com",
        "aud": APP_ID,
        "exp": now + 600,
        "iat": now,
        "sub": "001.abc.002",
    }
    token = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": KID})
    identity = await client.verify_identity_token(token)
    assert identity.sub == "001.abc.002"
    assert identity.audience == APP_ID
    bad = jwt.encode(
        {**claims, "aud": "com.other"}, rsa_key, algorithm="RS256", headers={"kid": KID}
    )
    with pytest.raises(InvalidIdentityToken) as exc:
        await client.verify_identity_token(bad)
    assert exc.value.reason == "aud"
    assert len(apple.calls("/auth/keys")) == 1


async def test_authorization_url_is_synchronous_and_checked(client: AsyncAppleClient) -> None:
    url = client.authorization_url(REDIRECT, state=STATE)
    assert "response_mode=form_post" in url
    assert "scope=name%20email" in url
    with pytest.raises(ValueError, match="form_post"):
        client.authorization_url(REDIRECT, state=STATE, response_mode="query")


async def test_aclose_closes_only_what_it_created(ec_key: ec.EllipticCurvePrivateKey) -> None:
    secret = ClientSecret(TEAM_A, KEY_ID, CLIENT_ID, pem(ec_key))
    injected = httpx.AsyncClient()
    async with AsyncAppleClient(CLIENT_ID, secret, http_client=injected):
        pass
    assert not injected.is_closed
    await injected.aclose()
    async with AsyncAppleClient(CLIENT_ID, secret) as owned:
        pass
    assert owned._http.is_closed
