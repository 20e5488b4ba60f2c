"""Server-to-server notifications, sent the way Apple sends them
(docs/apple-protocol.md#notifications).

Each event is a JWT signed with the JWKS keys (RS256): ``iss``, ``aud`` (the team's primary App
ID), ``iat``, ``exp``, ``jti`` and ``events``, which Apple sends as a JSON *string*. It is POSTed
as ``{"payload": "<JWT>"}`` to the team's notification URL, retried on failure, and every attempt
is kept in a delivery log that the control API exposes. The log and the retries live in memory
only; a normal stop tries each waiting delivery once more and records what it could not
deliver (docs/emulator.md#notifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

from .state import EmulatorState

log = logging.getLogger(__name__)

EventType = Literal["email-disabled", "email-enabled", "consent-revoked", "account-delete"]
NOTIFICATION_TTL = 300
MAX_LOG = 1000


@dataclass
class Attempt:
    """One POST of a notification."""

    at: float
    status_code: int | None
    error: str | None


@dataclass
class Delivery:
    """A notification and what happened to it."""

    id: str
    team_id: str
    url: str | None
    type: str
    sub: str
    jti: str
    aud: str
    payload: str
    events: dict[str, Any]
    status: Literal["pending", "delivered", "failed", "no-url"] = "pending"
    attempts: list[Attempt] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The delivery as the control API shows it."""
        return asdict(self)


class Notifier:
    """Builds, signs, delivers and logs server-to-server notifications."""

    def __init__(
        self,
        state: EmulatorState,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_delays: Sequence[float] = (0.5, 2.0, 5.0),
        timeout: float = 5.0,
    ) -> None:
        self._state = state
        self._transport = transport
        self._retry_delays = tuple(retry_delays)
        self._timeout = timeout
        self._log: deque[Delivery] = deque(maxlen=MAX_LOG)
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        # Set while the emulator stops: retries stop waiting (see aclose).
        self._stopping = False
        self._sleepers: set[asyncio.Future[None]] = set()

    def build(
        self,
        *,
        team_id: str,
        account_id: str,
        event_type: EventType,
        email: str | None = None,
    ) -> Delivery:
        """Sign a notification for one Apple ID and team, and add it to the log as pending."""
        state = self._state
        team = state.get_team(team_id)
        now = state.now()
        sub = state.sub_for(account_id, team_id)
        # Apple's captures show event_time in milliseconds
        # (docs/apple-protocol.md#quirk-event-time-unit).
        events: dict[str, Any] = {"type": event_type, "sub": sub, "event_time": int(now * 1000)}
        if email is not None:
            events["email"] = email
            events["is_private_email"] = "true"
        jti = secrets.token_hex(16)
        claims = {
            "iss": state.issuer,
            "aud": team.app_id,
            "iat": int(now),
            "exp": int(now) + NOTIFICATION_TTL,
            "jti": jti,
            "events": json.dumps(events, separators=(",", ":")),
        }
        delivery = Delivery(
            id=secrets.token_hex(8),
            team_id=team_id,
            url=team.notification_url,
            type=event_type,
            sub=sub,
            jti=jti,
            aud=team.app_id,
            payload=state.signer().sign(claims),
            events=events,
            status="pending" if team.notification_url else "no-url",
        )
        with self._lock:
            self._log.append(delivery)
        return delivery

    async def deliver(self, delivery: Delivery) -> Delivery:
        """POST ``{"payload": JWT}``; retry after each delay on a non-2xx answer or an error.

        When the emulator stops during a wait, the retry is made at once and is the last one.
        """
        if delivery.url is None:
            return delivery
        async with httpx.AsyncClient(transport=self._transport, timeout=self._timeout) as client:
            if await self._attempt(client, delivery):
                return delivery
            for delay in self._retry_delays:
                if self._stopping:
                    break
                await self._pause(delay)
                if await self._attempt(client, delivery):
                    return delivery
        delivery.status = "failed"
        log.warning(
            "notification %s to %s failed after %d attempts",
            delivery.id,
            delivery.url,
            len(delivery.attempts),
        )
        return delivery

    async def _attempt(self, client: httpx.AsyncClient, delivery: Delivery) -> bool:
        """One POST, recorded; whether it was answered 2xx."""
        assert delivery.url is not None
        try:
            response = await client.post(delivery.url, json={"payload": delivery.payload})
        except httpx.HTTPError as exc:
            delivery.attempts.append(
                Attempt(self._state.now(), None, f"{type(exc).__name__}: {exc}")
            )
            return False
        delivery.attempts.append(Attempt(self._state.now(), response.status_code, None))
        if not 200 <= response.status_code < 300:
            return False
        delivery.status = "delivered"
        log.info("notification %s delivered to %s", delivery.id, delivery.url)
        return True

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds before a retry, or until the emulator stops."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await waiter
        finally:
            self._sleepers.discard(waiter)

    def schedule(self, delivery: Delivery) -> None:
        """Deliver in the background (the event loop must be running)."""
        task = asyncio.get_running_loop().create_task(self._deliver_quietly(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_quietly(self, delivery: Delivery) -> None:
        try:
            await self.deliver(delivery)
        except Exception as exc:  # a bug here must not kill the loop; it is logged instead
            log.exception("notification %s: delivery crashed", delivery.id)
            delivery.status = "failed"
            delivery.attempts.append(Attempt(self._state.now(), None, repr(exc)))

    async def drain(self) -> None:
        """Wait until every background delivery has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """At shutdown, lose no notification silently and send none twice.

        Each delivery waiting for a retry is tried once more at once, and a POST in flight is
        given the delivery timeout to finish (it is not repeated). Whatever is still not
        delivered after that is cancelled, marked ``failed`` and logged.
        """
        self._stopping = True
        try:
            for waiter in list(self._sleepers):
                if not waiter.done():
                    waiter.set_result(None)
            tasks = list(self._tasks)
            if tasks:
                _done, left = await asyncio.wait(tasks, timeout=self._timeout + 1.0)
                for task in left:
                    task.cancel()
                for task in left:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self._fail_undelivered()
        finally:
            self._stopping = False

    def _fail_undelivered(self) -> None:
        with self._lock:
            undelivered = [d for d in self._log if d.status == "pending"]
        for delivery in undelivered:
            delivery.status = "failed"
            delivery.attempts.append(
                Attempt(self._state.now(), None, "the emulator stopped before delivering it")
            )
            log.warning(
                "notification %s to %s not delivered: the emulator stopped",
                delivery.id,
                delivery.url,
            )

    def log(self) -> list[Delivery]:
        """Every delivery, oldest first (the last 1000)."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        """Forget the delivery log."""
        with self._lock:
            self._log.clear()
