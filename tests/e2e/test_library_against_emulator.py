"""The client library against the emulator, in-process: the whole web flow, refresh, replay,
revocation, the first-login name, notifications and key rotation. Two independent
implementations (the library verifies with its own RS256 core, the emulator signs with joserfc)
must agree, as they would with Apple."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from appleconnect import (
    AppleKeys,
    AsyncAppleClient,
    ClientSecret,
    IdentityToken,
    InvalidClient,
    InvalidGrant,
    Notification,
    parse_authorization_response,
    parse_notification,
)
from appleconnect.emulator import EmulatorState

BASE = "http://apple.emulator.test"
REDIRECT = "https://example.com/auth/apple/callback"


@pytest.fixture
async def apple(state: EmulatorState, http: httpx.AsyncClient) -> AsyncIterator[AsyncAppleClient]:
    team = state.default_team
    secret = ClientSecret(team.team_id, team.key_id, team.services_id, team.private_key_pem)
    client = AsyncAppleClient(
        team.services_id,
        secret,
        extra_audiences=[team.app_id],
        base_url=BASE,
        http_client=http,
    )
    yield client
    await client.aclose()


async def consent(
    http: httpx.AsyncClient, url: str, *, account: str, share_email: bool = True, **extra: Any
) -> dict[str, str]:
    """Do what the browser would on the consent page, through the control API."""
    body: dict[str, Any] = dict(parse_qsl(urlsplit(url).query))
    body.update(account=account, share_email=share_email, **extra)
    response = await http.post("/emulator/authorize", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["redirect_uri"] == REDIRECT
    assert result["response_mode"] == "form_post"
    params: dict[str, str] = result["params"]
    return params


async def sign_in(
    apple: AsyncAppleClient, http: httpx.AsyncClient, account: str, **extra: Any
) -> tuple[Any, IdentityToken, Any]:
    state_value, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    url = apple.authorization_url(REDIRECT, state=state_value, nonce=nonce)
    assert url.startswith(f"{BASE}/auth/authorize?")
    callback = parse_authorization_response(await consent(http, url, account=account, **extra))
    callback.check_state(state_value)
    assert callback.code is not None
    tokens = await apple.exchange_code(callback.code, redirect_uri=REDIRECT)
    assert tokens.id_token is not None
    identity = await apple.verify_identity_token(
        tokens.id_token, nonce=nonce, access_token=tokens.access_token
    )
    return callback, identity, tokens


async def test_full_web_flow_with_hidden_email(
    apple: AsyncAppleClient, http: httpx.AsyncClient, state: EmulatorState
) -> None:
    account = state.list_accounts()[0]
    callback, identity, tokens = await sign_in(
        apple, http, account.email, share_email=False, name="Maria Ruiz"
    )
    # The first authorization carries the user JSON (the name), unsigned.
    assert callback.user is not None
    assert callback.user.first_name == "Maria"
    assert callback.user.last_name == "Ruiz"
    # The verified token carries a relay address and real booleans.
    assert identity.is_private_email is True
    assert identity.email_verified is True
    assert identity.email is not None
    assert identity.email.endswith("@privaterelay.appleid.com")
    assert identity.audience == state.default_team.services_id
    assert identity.at_hash is not None
    assert tokens.refresh_token
    assert tokens.expires_in == 3600

    # The second authorization: no user JSON, same sub.
    again, identity2, _ = await sign_in(apple, http, account.email, share_email=False)
    assert again.user is None
    assert identity2.sub == identity.sub


async def test_code_is_single_use(apple: AsyncAppleClient, http: httpx.AsyncClient) -> None:
    state_value = secrets.token_urlsafe(24)
    url = apple.authorization_url(REDIRECT, state=state_value)
    params = await consent(http, url, account="li.wei@example.com")
    await apple.exchange_code(params["code"], redirect_uri=REDIRECT)
    with pytest.raises(InvalidGrant) as info:
        await apple.exchange_code(params["code"], redirect_uri=REDIRECT)
    assert info.value.error == "invalid_grant"
    assert info.value.error_description


async def test_refresh_gives_no_new_refresh_token_and_revoke_ends_it(
    apple: AsyncAppleClient, http: httpx.AsyncClient
) -> None:
    _, identity, tokens = await sign_in(apple, http, "sam.okafor@example.com")
    refreshed = await apple.refresh(tokens.refresh_token)
    assert refreshed.refresh_token is None
    assert refreshed.id_token is not None
    assert (await apple.verify_identity_token(refreshed.id_token)).sub == identity.sub
    await apple.revoke(tokens.refresh_token)
    await apple.revoke(tokens.refresh_token)  # already invalid: still 200, no error
    with pytest.raises(InvalidGrant):
        await apple.refresh(tokens.refresh_token)
    # After revocation Apple sends the name again on the next authorization.
    callback, _, _ = await sign_in(apple, http, "sam.okafor@example.com", name="Sam Okafor")
    assert callback.user is not None
    assert callback.user.first_name == "Sam"


async def test_secret_from_another_key_is_invalid_client(
    state: EmulatorState, http: httpx.AsyncClient
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    team = state.default_team
    wrong = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    secret = ClientSecret(team.team_id, team.key_id, team.services_id, wrong)
    async with AsyncAppleClient(
        team.services_id, secret, base_url=BASE, http_client=http
    ) as client:
        with pytest.raises(InvalidClient) as info:
            await client.exchange_code("c.not-a-code", redirect_uri=REDIRECT)
    assert info.value.error == "invalid_client"
    assert "appleconnect doctor" in str(info.value)


async def test_rotated_keys_are_fetched_once(
    apple: AsyncAppleClient, http: httpx.AsyncClient, state: EmulatorState
) -> None:
    await sign_in(apple, http, "li.wei@example.com")
    fetches = apple.keys.fetch_count
    state.rotate_signing_key()
    # The refetch interval has not passed since the first fetch: a fresh client fetches anew.
    team = state.default_team
    secret = ClientSecret(team.team_id, team.key_id, team.services_id, team.private_key_pem)
    async with AsyncAppleClient(
        team.services_id, secret, base_url=BASE, http_client=http
    ) as client:
        _, identity, _ = await sign_in(client, http, "li.wei@example.com")
        assert identity.sub
        assert client.keys.fetch_count == 1
    assert apple.keys.fetch_count == fetches


async def test_notifications_verify_with_the_library(
    apple: AsyncAppleClient,
    http: httpx.AsyncClient,
    state: EmulatorState,
    receiver: tuple[str, list[bytes]],
) -> None:
    url, bodies = receiver
    state.set_notification_url(url)
    account = state.list_accounts()[1]
    _, identity, _ = await sign_in(apple, http, account.email, share_email=False)
    response = await http.post(f"/emulator/accounts/{account.id}/revoke-consent", json={})
    assert response.status_code == 200, response.text
    for _ in range(100):
        if bodies:
            break
        await asyncio.sleep(0.05)
    assert len(bodies) == 1
    keys_response = await http.get("/auth/keys")
    keys = AppleKeys.from_jwks(keys_response.json())
    team = state.default_team
    note = parse_notification(bodies[0], keys, audiences=[team.services_id, team.app_id])
    assert note.type == Notification.CONSENT_REVOKED
    assert note.sub == identity.sub
    assert note.jti
    # Apple's quirk, reproduced: events is a JSON string inside the JWT.
    payload = json.loads(bodies[0])["payload"]
    from appleconnect._jws import b64url_decode

    claims = json.loads(b64url_decode(payload.split(".")[1]))
    assert isinstance(claims["events"], str)
