"""Apple's key set: caching, rotation, the re-fetch rate limit, shared fetches, stale-if-error."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appleconnect import (
    AppleKeys,
    AppleUnavailable,
    InvalidIdentityToken,
    InvalidNotification,
    KeysUnavailable,
    aparse_notification,
    averify_identity_token,
    parse_notification,
    verify_identity_token,
)
from appleconnect._keys import parse_jwks
from appletest import AUDIENCE, KID, NOW, Clock, apple_claims, jwk_for


class FakeApple:
    """A MockTransport handler serving a JWKS that tests can change, break, or slow down."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.calls = 0
        self.fail: Exception | int | None = None
        self.delay = 0.0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        assert request.url.path == "/auth/keys"
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if isinstance(self.fail, Exception):
            raise self.fail
        if isinstance(self.fail, int):
            return httpx.Response(self.fail, text="unavailable")
        return httpx.Response(200, json=self.jwks)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.fail, Exception):
            raise self.fail
        if isinstance(self.fail, int):
            return httpx.Response(self.fail, text="unavailable")
        return httpx.Response(200, json=self.jwks)


@pytest.fixture
def fake(jwks: dict[str, Any]) -> FakeApple:
    return FakeApple(jwks)


def make_keys(fake: FakeApple, clock: Clock, **kw: Any) -> AppleKeys:
    client = httpx.Client(transport=httpx.MockTransport(fake), base_url="https://apple.test")
    return AppleKeys(base_url="https://apple.test", http_client=client, clock=clock, **kw)


def test_fetches_once_and_caches_for_the_ttl(fake: FakeApple) -> None:
    clock = Clock()
    keys = make_keys(fake, clock, ttl=600)
    assert keys.get("W6WcOKB") is not None
    assert keys.get("W6WcOKB") is not None
    clock.now += 599
    assert keys.get("W6WcOKB") is not None
    assert fake.calls == 1
    clock.now += 2
    assert keys.get("W6WcOKB") is not None
    assert fake.calls == 2


def test_unknown_kid_refetches_once_then_is_rate_limited(
    fake: FakeApple, other_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock()
    keys = make_keys(fake, clock, refetch_interval=60)
    keys.get("W6WcOKB")
    # Apple rotates: the new kid appears after one re-fetch (once the interval since the
    # previous fetch has passed).
    clock.now += 61
    fake.jwks = {"keys": [*fake.jwks["keys"], jwk_for(other_key, "fh6Bs8")]}
    assert keys.get("fh6Bs8") is not None
    assert fake.calls == 2
    # Random kids within the interval do not cause fetches.
    clock.now += 10
    for i in range(50):
        assert keys.get(f"random-{i}") is None
    assert fake.calls == 2
    clock.now += 60
    assert keys.get("random-x") is None
    assert fake.calls == 3


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kids=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=200))
def test_random_kids_cause_at_most_one_fetch_per_interval(
    jwks: dict[str, Any], kids: list[str]
) -> None:
    fake = FakeApple(jwks)
    clock = Clock()
    keys = make_keys(fake, clock, refetch_interval=30)
    keys.get("W6WcOKB")
    for kid in kids:
        keys.get(kid)
        clock.now += 0.1  # 200 lookups span at most 20 s < 30 s
    assert fake.calls <= 2


def test_concurrent_misses_share_one_fetch(fake: FakeApple) -> None:
    fake.delay = 0.2
    keys = make_keys(fake, Clock())
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(keys.get("W6WcOKB"))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.calls == 1
    assert all(r is not None for r in results)


async def test_concurrent_async_misses_share_one_fetch(fake: FakeApple) -> None:
    fake.delay = 0.05
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle_async))
    keys = AppleKeys(base_url="https://apple.test", async_http_client=client, clock=Clock())
    results = await asyncio.gather(*(keys.aget("W6WcOKB") for _ in range(10)))
    assert fake.calls == 1
    assert all(r is not None for r in results)
    await client.aclose()


def test_stale_keys_serve_while_apple_is_down_within_the_bound(fake: FakeApple) -> None:
    clock = Clock()
    keys = make_keys(fake, clock, ttl=600, max_stale=3600, refetch_interval=60)
    keys.get("W6WcOKB")
    fake.fail = httpx.ConnectError("down")
    clock.now += 700
    assert keys.get("W6WcOKB") is not None  # stale but served
    calls = fake.calls
    clock.now += 10
    assert keys.get("W6WcOKB") is not None
    assert fake.calls == calls  # a failed refresh is not retried at every request
    clock.now += 600 + 3600
    with pytest.raises(AppleUnavailable, match="could not be fetched"):
        keys.get("W6WcOKB")


def test_http_error_and_garbage_are_failures(fake: FakeApple) -> None:
    fake.fail = 503
    with pytest.raises(AppleUnavailable, match="HTTP 503"):
        make_keys(fake, Clock()).get("W6WcOKB")


def test_transport_error_is_retried_once(fake: FakeApple) -> None:
    fake.fail = httpx.ConnectError("down")
    with pytest.raises(AppleUnavailable):
        make_keys(fake, Clock()).get("W6WcOKB")
    assert fake.calls == 2


def test_from_jwks_never_fetches(jwks: dict[str, Any]) -> None:
    keys = AppleKeys.from_jwks(jwks)
    assert keys.kids == ("W6WcOKB",)
    assert keys.get("other") is None
    assert keys.fetch_count == 0


def test_any_key_count_and_kid_length(other_key: rsa.RSAPrivateKey) -> None:
    entries = [jwk_for(other_key, "k" * n) for n in (1, 6, 10, 64, 256)]
    assert set(parse_jwks({"keys": entries})) == {"k" * n for n in (1, 6, 10, 64, 256)}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "'keys' list"),
        ({"keys": "x"}, "'keys' list"),
        ({"keys": []}, "no RSA signing key"),
        ({"keys": [{"kty": "EC", "kid": "a"}]}, "no RSA signing key"),
        ({"keys": [{"kty": "RSA", "kid": "a", "n": "!!", "e": "AQAB"}]}, "no RSA signing key"),
        ({"keys": [{"kty": "RSA", "kid": str(i)} for i in range(101)]}, "more than 100"),
    ],
)
def test_bad_key_sets(document: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_jwks(document)


def test_small_rsa_keys_and_other_algorithms_are_skipped(apple_key: rsa.RSAPrivateKey) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    wrong_alg = dict(jwk_for(apple_key, "enc"), alg="RSA-OAEP", use="enc")
    parsed = parse_jwks({"keys": [jwk_for(small, "small"), wrong_alg, jwk_for(apple_key, "ok")]})
    assert list(parsed) == ["ok"]


def test_keys_endpoint_url_and_body_limit(fake: FakeApple) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=json.dumps({"keys": [], "pad": "x" * 300_000}))

    client = httpx.Client(transport=httpx.MockTransport(handler))
    keys = AppleKeys(base_url="https://apple.test/", http_client=client, clock=Clock())
    with pytest.raises(AppleUnavailable, match="larger than any Apple publishes"):
        keys.get("x")
    assert seen[0] == "https://apple.test/auth/keys"


def test_cached_never_fetches_and_honours_the_ttl(fake: FakeApple) -> None:
    clock = Clock()
    keys = make_keys(fake, clock, ttl=600)
    assert keys.cached("W6WcOKB") is None  # nothing fetched yet, and cached() will not fetch
    assert fake.calls == 0
    key = keys.get("W6WcOKB")
    assert key is not None
    assert fake.calls == 1
    assert keys.cached("W6WcOKB") is key
    assert keys.cached("unknown") is None
    clock.now += 600  # stale: cached() says so, get() re-fetches
    assert keys.cached("W6WcOKB") is None
    assert keys.get("W6WcOKB") is not None
    assert fake.calls == 2
    assert keys.cached("W6WcOKB") is not None


def test_cached_serves_a_fixed_set_forever(jwks: dict[str, Any]) -> None:
    keys = AppleKeys.from_jwks(jwks)
    assert keys.cached("W6WcOKB") is keys.get("W6WcOKB") is not None
    assert keys.cached("other") is None


# -- Apple rotates its key while /auth/keys fails (issue 9, item 3) ------------------------------

NEW_KID = "fh6Bs8"


def make_async_keys(fake: FakeApple, clock: Clock, **kw: Any) -> AppleKeys:
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle_async))
    return AppleKeys(base_url="https://apple.test", async_http_client=client, clock=clock, **kw)


def rotated_token(sign: Callable[..., str], other_key: rsa.RSAPrivateKey) -> str:
    """An identity token signed with Apple's new key, which the cached set does not hold."""
    return sign(apple_claims(), key=other_key, kid=NEW_KID)


def notification_body(sign: Callable[..., str], other_key: rsa.RSAPrivateKey) -> bytes:
    events = json.dumps({"type": "account-delete", "sub": "001.abc.1", "event_time": NOW})
    claims = {"iss": "https://appleid.apple.com", "aud": AUDIENCE, "iat": NOW, "jti": "j1"}
    token = sign({**claims, "events": events}, key=other_key, kid=NEW_KID)
    return json.dumps({"payload": token}).encode()


def rotate(fake: FakeApple, other_key: rsa.RSAPrivateKey) -> None:
    fake.jwks = {"keys": [*fake.jwks["keys"], jwk_for(other_key, NEW_KID)]}


@pytest.mark.parametrize("failure", [503, httpx.ConnectTimeout("slow"), httpx.ConnectError("x")])
def test_unknown_kid_while_apple_fails_is_unavailable_then_recovers_after_the_backoff(
    fake: FakeApple,
    sign: Callable[..., str],
    other_key: rsa.RSAPrivateKey,
    failure: int | Exception,
) -> None:
    clock = Clock()
    keys = make_keys(fake, clock, refetch_interval=60, failure_backoff=3)
    token = rotated_token(sign, other_key)
    assert keys.get(KID) is not None
    clock.now += 61
    fake.fail = failure
    with pytest.raises(KeysUnavailable) as info:
        verify_identity_token(token, keys, audiences=AUDIENCE, now=NOW)
    assert info.value.kid == NEW_KID
    assert info.value.retry_after == 3
    assert not isinstance(info.value, InvalidIdentityToken)
    calls = fake.calls
    # Within the backoff: still undecidable, and Apple is not asked again.
    clock.now += 2
    with pytest.raises(KeysUnavailable) as info:
        verify_identity_token(token, keys, audiences=AUDIENCE, now=NOW)
    assert info.value.retry_after == pytest.approx(1)
    assert fake.calls == calls
    # Tokens signed with the cached key keep verifying during the outage.
    assert verify_identity_token(sign(apple_claims()), keys, audiences=AUDIENCE, now=NOW).sub
    # Apple is back, with the new key: seconds later (not a refetch_interval later) it verifies.
    fake.fail = None
    rotate(fake, other_key)
    clock.now += 1
    assert verify_identity_token(token, keys, audiences=AUDIENCE, now=NOW).sub
    assert fake.calls == calls + 1


def test_never_fetched_and_apple_down_is_unavailable_with_a_backoff(
    fake: FakeApple, sign: Callable[..., str]
) -> None:
    clock = Clock()
    keys = make_keys(fake, clock, failure_backoff=5)
    fake.fail = 500
    with pytest.raises(KeysUnavailable, match="HTTP 500"):
        verify_identity_token(sign(apple_claims()), keys, audiences=AUDIENCE, now=NOW)
    assert fake.calls == 1
    for _ in range(20):
        with pytest.raises(KeysUnavailable, match=r"failed 0\.0 s ago"):
            keys.get(KID)
    assert fake.calls == 1
    clock.now += 5
    fake.fail = None
    assert keys.get(KID) is not None
    assert fake.calls == 2


def test_a_kid_unknown_to_a_fresh_successful_fetch_stays_invalid(
    fake: FakeApple, sign: Callable[..., str], other_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock()
    keys = make_keys(fake, clock, refetch_interval=60, failure_backoff=1)
    keys.get(KID)
    clock.now += 61
    with pytest.raises(InvalidIdentityToken) as info:
        verify_identity_token(rotated_token(sign, other_key), keys, audiences=AUDIENCE, now=NOW)
    assert info.value.reason == "kid"
    assert fake.calls == 2


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kids=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=200))
def test_random_kids_while_apple_fails_cause_at_most_one_fetch_per_backoff(
    jwks: dict[str, Any], kids: list[str]
) -> None:
    fake = FakeApple(jwks)
    clock = Clock()
    keys = make_keys(fake, clock, refetch_interval=60, failure_backoff=5)
    keys.get(KID)
    clock.now += 61
    fake.fail = 503
    for kid in kids:
        with pytest.raises(KeysUnavailable):
            keys.get(kid if kid != KID else kid + "x")
        clock.now += 0.1  # 200 lookups span at most 20 s: at most 4 backoffs
    assert fake.calls <= 1 + 5


def test_stale_set_still_serves_its_kids_but_not_unknown_ones(
    fake: FakeApple, other_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock()
    keys = make_keys(fake, clock, ttl=600, max_stale=3600, failure_backoff=2)
    keys.get(KID)
    fake.fail = httpx.ReadTimeout("slow")
    clock.now += 700
    assert keys.get(KID) is not None  # stale, served
    with pytest.raises(KeysUnavailable, match=r"failed 0\.0 s ago.*fh6Bs8"):
        keys.get(NEW_KID)  # used to be None, that is, an invalid token
    clock.now += 2
    fake.fail = None
    rotate(fake, other_key)
    assert keys.get(NEW_KID) is not None


def test_a_key_set_nested_deeper_than_the_stack_is_a_failure(fake: FakeApple) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[" * 100_000)

    keys = AppleKeys(
        base_url="https://apple.test",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(KeysUnavailable, match="not JSON"):
        keys.get(KID)


def test_negative_failure_backoff_is_refused() -> None:
    with pytest.raises(ValueError, match="failure_backoff"):
        AppleKeys(failure_backoff=-1)


async def test_async_rotation_during_an_outage(
    fake: FakeApple, sign: Callable[..., str], other_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock()
    keys = make_async_keys(fake, clock, refetch_interval=60, failure_backoff=3)
    token = rotated_token(sign, other_key)
    assert await keys.aget(KID) is not None
    clock.now += 61
    fake.fail = httpx.ConnectError("down")
    with pytest.raises(KeysUnavailable) as info:
        await averify_identity_token(token, keys, audiences=AUDIENCE, now=NOW)
    assert info.value.kid == NEW_KID
    calls = fake.calls
    with pytest.raises(KeysUnavailable):
        await aparse_notification(notification_body(sign, other_key), keys, audiences=AUDIENCE)
    assert fake.calls == calls
    clock.now += 3
    fake.fail = None
    rotate(fake, other_key)
    note = await aparse_notification(
        notification_body(sign, other_key), keys, audiences=AUDIENCE, now=NOW
    )
    assert note.type == "account-deleted"
    assert (await averify_identity_token(token, keys, audiences=AUDIENCE, now=NOW)).sub
    await keys.aclose()


def test_notification_with_an_unknown_kid_while_apple_fails_is_unavailable(
    fake: FakeApple, sign: Callable[..., str], other_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock()
    keys = make_keys(fake, clock, refetch_interval=60)
    keys.get(KID)
    clock.now += 61
    fake.fail = 502
    body = notification_body(sign, other_key)
    with pytest.raises(KeysUnavailable) as info:
        parse_notification(body, keys, audiences=AUDIENCE, now=NOW)
    assert not isinstance(info.value, InvalidNotification)
    assert isinstance(info.value, AppleUnavailable)


async def test_a_cancelled_fetch_counts_as_a_failure(fake: FakeApple) -> None:
    clock = Clock()
    keys = make_async_keys(fake, clock, failure_backoff=5)
    fake.delay = 10
    task = asyncio.ensure_future(keys.aget(KID))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fake.delay = 0
    with pytest.raises(KeysUnavailable):
        await keys.aget(KID)
    assert fake.calls == 1
    await keys.aclose()
