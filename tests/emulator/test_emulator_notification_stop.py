"""A notification queued or in flight when the emulator stops is neither lost nor sent twice:
the stop gives each pending delivery one more attempt at once and lets a POST in flight finish,
then records what did not get through."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from emulator_helpers import NotificationServer

from appleconnect.emulator import EmulatorState
from appleconnect.emulator.notifications import Delivery, Notifier


def queued(notifier: Notifier, state: EmulatorState, url: str) -> Delivery:
    """A consent-revoked notification for Maria, scheduled for delivery to ``url``."""
    state.set_notification_url(url)
    account = state.find_account("maria.ruiz@example.com")
    assert account is not None
    delivery = notifier.build(
        team_id=state.default_team.team_id, account_id=account.id, event_type="consent-revoked"
    )
    notifier.schedule(delivery)
    return delivery


async def attempts(delivery: Delivery, count: int) -> None:
    for _ in range(400):
        if len(delivery.attempts) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(delivery.attempts)} attempts, not {count}")


async def test_a_delivery_waiting_for_its_retry_is_sent_once_at_stop(
    state: EmulatorState, notification_server: NotificationServer
) -> None:
    notifier = Notifier(state, retry_delays=(3600.0,))  # the retry would come in an hour
    notification_server.fail_next = 1
    delivery = queued(notifier, state, notification_server.url)
    await attempts(delivery, 1)
    assert delivery.status == "pending"

    await notifier.aclose()

    assert delivery.status == "delivered"
    assert [a.status_code for a in delivery.attempts] == [500, 200]
    [received] = notification_server.received  # once, the one that was answered 2xx
    assert received.body == {"payload": delivery.payload}


async def test_a_delivery_that_still_fails_at_stop_is_recorded_as_failed(
    state: EmulatorState, notification_server: NotificationServer
) -> None:
    notifier = Notifier(state, retry_delays=(3600.0, 3600.0))
    notification_server.fail_next = 5
    delivery = queued(notifier, state, notification_server.url)
    await attempts(delivery, 1)

    await notifier.aclose()

    assert delivery.status == "failed"
    assert [a.status_code for a in delivery.attempts] == [500, 500]
    assert notification_server.received == []
    assert [d.status for d in notifier.log()] == ["failed"]


async def test_a_post_in_flight_at_stop_finishes_and_is_not_repeated(
    state: EmulatorState,
) -> None:
    arrived = asyncio.Event()
    answer = asyncio.Event()
    bodies: list[dict[str, Any]] = []

    async def slow_receiver(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        bodies.append(json.loads(body))
        arrived.set()
        await answer.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    notifier = Notifier(
        state, transport=httpx.ASGITransport(app=slow_receiver), retry_delays=(3600.0,)
    )
    delivery = queued(notifier, state, "http://service.example/apple/notifications")
    await arrived.wait()
    stopping = asyncio.ensure_future(notifier.aclose())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # the stop waits for the POST in flight
    answer.set()
    await stopping

    assert delivery.status == "delivered"
    assert [a.status_code for a in delivery.attempts] == [200]
    assert bodies == [{"payload": delivery.payload}]
