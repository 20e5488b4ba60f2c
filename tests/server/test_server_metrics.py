"""``GET /metrics``: parsed with prometheus_client's own parser after sign-ins on each path, a
notification and a refused request; the counters moved. Open on loopback only; elsewhere the
token or the allow-list."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import PUBLIC_URL, Env, open_env

from appleconnect.server.settings import Secret

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_counters_move_after_sign_ins(env: Env) -> None:
    before = await scrape(env.http)
    await env.web_sign_in()
    native = await env.native_code(account="li.wei@example.com")
    first = await env.http.post(
        "/api/apple_connect", data={"key": env.api_key, "code": native["code"]}
    )
    assert first.status_code == 200, first.text
    refresh = first.json()["api_response"]["refresh_token"]
    again = await env.http.post(
        "/api/apple_connect", json={"key": env.api_key, "refresh_token": refresh}
    )
    assert again.status_code == 200, again.text
    refused = await env.http.post("/api/apple_connect", data={"key": env.api_key, "code": "c.x"})
    assert refused.status_code == 400
    after = await scrape(env.http)

    signins = "appleconnect_signins_total"
    assert moved(before, after, signins, path="web", outcome="success") == 1
    assert moved(before, after, signins, path="api", outcome="success") == 1
    assert moved(before, after, signins, path="refresh", outcome="success") == 1
    assert moved(before, after, signins, path="api", outcome="refused") == 1
    calls = "appleconnect_apple_calls_total"
    assert moved(before, after, calls, endpoint="token", outcome="ok") == 2  # web + api code
    assert moved(before, after, calls, endpoint="token", outcome="400") == 1  # the bad code
    latency = "appleconnect_apple_call_duration_seconds_count"
    assert moved(before, after, latency, endpoint="token") == 3
    route = {"route": "/api/apple_connect", "method": "POST"}
    request_count = "appleconnect_http_request_duration_seconds_count"
    assert moved(before, after, request_count, status="200", **route) == 2
    assert moved(before, after, request_count, status="400", **route) == 1
    assert after["appleconnect_outbox_sent_total", ()] >= 0
    assert after["appleconnect_db_available", ()] == 1.0
    assert ("appleconnect_db_pool_connections_in_use", ()) in after


async def test_notifications_and_rate_limit_refusals(env: Env) -> None:
    before = await scrape(env.http)
    forged = await env.http.post("/auth/apple/notifications", json={"payload": "a.b.c"})
    assert forged.status_code == 400
    after = await scrape(env.http)
    name = "appleconnect_notifications_total"
    assert moved(before, after, name, event="unknown", outcome="refused") == 1


async def test_rate_limit_refusal_counted(tmp_path: pytest.TempPathFactory) -> None:
    async with open_env(tmp_path / "data", {"rate_limit_per_ip": 1}) as env:  # type: ignore[operator]
        before = await scrape(env.http)
        for _ in range(2):
            last = await env.http.post("/api/apple_connect", data={"key": env.api_key})
        assert last.status_code == 429
        after = await scrape(env.http)
    name = "appleconnect_rate_limit_refusals_total"
    assert moved(before, after, name, route="/api/apple_connect") == 1


async def test_only_loopback_token_or_allow_list(env: Env) -> None:
    app = env.sandbox.app
    outside = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=outside, base_url=PUBLIC_URL) as http:
        refused = await http.get("/metrics", headers={"accept": "application/json"})
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
        assert "appleconnect_" not in refused.text
        env.service.settings = env.service.settings.__class__(
            **{**env.service.settings.__dict__, "metrics_token": Secret("t0ken-for-scrapes")}
        )
        wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 403
        right = await http.get("/metrics", headers={"authorization": "Bearer t0ken-for-scrapes"})
        assert right.status_code == 200
        env.service.settings = env.service.settings.__class__(
            **{**env.service.settings.__dict__, "metrics_allow": ("203.0.113.0/24",)}
        )
        assert (await http.get("/metrics")).status_code == 200
