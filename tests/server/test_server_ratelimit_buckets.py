"""The rate-limit bucket of a client address, computed once per address and kept (bounded)."""

from __future__ import annotations

import time

from appleconnect.server import load_settings, ratelimit
from appleconnect.server.ratelimit import RateLimiter

CASES = {
    "203.0.113.7": "ip:203.0.113.7",
    "2001:db8:1:2:3:4:5:6": "ip:2001:db8:1:2::/64",
    "2001:db8:1:2:ffff::1": "ip:2001:db8:1:2::/64",  # the same /64
    "::ffff:198.51.100.9": "ip:198.51.100.9",  # an IPv4 client on a dual-stack socket
    "10.1.2.3": None,  # exempt
    "testclient": "ip:testclient",  # not an address
    "": None,
}


def limiter() -> RateLimiter:
    settings = load_settings(environ={}, overrides={"rate_limit_exempt": ["10.0.0.0/8"]})
    return RateLimiter(settings, time.time)


def test_each_address_gets_the_same_bucket_the_first_time_and_after() -> None:
    kept = limiter()
    assert {host: kept.address_bucket(host) for host in CASES} == CASES
    assert {host: kept.address_bucket(host) for host in CASES} == CASES


def test_the_kept_buckets_are_bounded() -> None:
    kept = limiter()
    for i in range(ratelimit._KNOWN_ADDRESSES + 10):
        host = f"198.18.{i // 256}.{i % 256}"
        assert kept.address_bucket(host) == f"ip:{host}"
    assert 0 < len(kept._buckets) <= ratelimit._KNOWN_ADDRESSES
