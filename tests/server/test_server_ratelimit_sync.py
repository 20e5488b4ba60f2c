"""Rate limits with the default batching (``rate_limit_sync`` > 0): each instance counts in
memory, merges into the database's shared count every ``rate_limit_sync`` seconds, and writes
every request once a bucket passes half its limit. A session check writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import seed_user
from sqlalchemy import event, select
from test_server_ratelimit import T0, Instances, assert_limited, limited_settings, two_instances

from appleconnect.server import store
from appleconnect.server.models import RateLimitCounter

SYNC = 60  # merges are called by the tests (a timer is tested on its own)
IP = "192.0.2.7"


@pytest.fixture
async def instances(tmp_path: Path, database_url: str) -> AsyncIterator[Instances]:
    settings = limited_settings(
        tmp_path, database_url, rate_limit_per_ip=10, rate_limit_per_key=0
    ).replace(rate_limit_sync=SYNC)
    async with two_instances(settings) as found:
        yield found


async def shared_count(instances: Instances, bucket: str) -> int | None:
    async with instances.apps[0].state.container.sessions() as db:
        return await db.scalar(
            select(RateLimitCounter.hits).where(RateLimitCounter.bucket == bucket)
        )


async def test_counts_are_merged_and_exact_near_the_limit(instances: Instances) -> None:
    a = await instances.client(0, IP)
    b = await instances.client(1, IP)
    for _ in range(4):
        assert (await a.get("/api/validate_auth_cookie")).status_code == 401
    # Under half the limit: counted in memory only, written within rate_limit_sync.
    assert await shared_count(instances, f"ip:{IP}") is None
    limiter = instances.apps[0].state.container.limiter
    await limiter.sync_now(instances.apps[0].state.container.sessions)
    assert await shared_count(instances, f"ip:{IP}") == 4
    # B has not read the shared count: 5 more in memory (half of 10), then every request is
    # written, and the shared count (4 from A) decides: 6 pass in all, the 7th is refused.
    answers = [(await b.get("/api/validate_auth_cookie")).status_code for _ in range(7)]
    assert answers == [401] * 6 + [429]
    assert await shared_count(instances, f"ip:{IP}") == 11
    # A last read 4: one more passes in memory (the documented overshoot, under half the
    # limit per other instance), then A writes, reads 12 and refuses.
    assert (await a.get("/api/validate_auth_cookie")).status_code == 401
    assert_limited(await a.get("/api/validate_auth_cookie"), 50, None)
    # A new window starts afresh on both.
    instances.set_clock(T0 + 60)
    assert (await a.get("/api/validate_auth_cookie")).status_code == 401
    assert (await b.get("/api/validate_auth_cookie")).status_code == 401


async def test_a_timer_merges_the_counts(instances: Instances) -> None:
    for app in instances.apps:
        app.state.container.limiter.sync = 0.1
    a = await instances.client(0, IP)
    b = await instances.client(1, IP)
    assert (await a.get("/api/validate_auth_cookie")).status_code == 401
    assert (await b.get("/api/validate_auth_cookie")).status_code == 401
    for _ in range(100):
        if await shared_count(instances, f"ip:{IP}") == 2:
            break
        await asyncio.sleep(0.05)
    assert await shared_count(instances, f"ip:{IP}") == 2


async def test_session_checks_write_nothing(instances: Instances) -> None:
    service = instances.apps[0].state.container
    async with service.sessions() as db:
        user = await seed_user(db, "001234.readonly", "reader@example.com")
        token = await store.create_session(db=db, user_id=user.id, ttl=3600)
        await db.commit()
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM settings" not in statement:  # the periodic check for changed settings
            statements.append(statement.split(None, 1)[0].upper())

    for engine in service.reads.engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        client = await instances.client(0, IP)
        for path in ("/api/validate_auth_cookie", "/api/get_currentuserinfo") * 2:
            answer = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, answer.text
        assert statements == ["SELECT"] * 4  # one per request, and no write
        await service.limiter.sync_now(service.sessions)
        assert statements[4:] == ["INSERT"]  # the four counted with one upsert
    finally:
        for engine in service.reads.engines:
            event.remove(engine, "before_cursor_execute", record)
    assert await shared_count(instances, f"ip:{IP}") == 4
