"""BodyLimit refuses a body over the limit however it is framed, and leaves a request that has
no body (HTTP/1 without Content-Length or Transfer-Encoding) to the app untouched."""

from __future__ import annotations

from typing import Any

import pytest

from appleconnect.server.errors import ServiceError
from appleconnect.server.middleware import BodyLimit

LIMIT = 10


def _scope(headers: list[tuple[bytes, bytes]], http_version: str = "1.1") -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": http_version,
        "method": "POST",
        "path": "/api/apple_connect",
        "headers": headers,
    }


async def _run(scope: dict[str, Any], chunks: list[bytes]) -> tuple[list[Any], list[bytes], Any]:
    """Run BodyLimit around an app that reads the whole body; what was sent, what the app
    read, and which receive callable the app was given."""
    sent: list[Any] = []
    read: list[bytes] = []
    given: list[Any] = []
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    async def app(scope: Any, receive_: Any, send_: Any) -> None:
        given.append(receive_)
        more = True
        while more and pending:
            message = await receive_()
            read.append(message["body"])
            more = message["more_body"]

    await BodyLimit(app, limit=LIMIT)(scope, receive, send)
    return sent, read, (given[0] is receive) if given else None


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    sent, read, _ = await _run(_scope([(b"content-length", b"11")]), [b"x" * 11])
    assert sent[0]["status"] == 413
    assert read == []


async def test_every_content_length_is_checked_not_only_one() -> None:
    headers = [(b"content-length", b"5"), (b"content-length", b"500")]
    sent, _, _ = await _run(_scope(headers), [b"x" * 5])
    assert sent[0]["status"] == 413
    bad = [(b"content-length", b"5"), (b"content-length", b"-1")]
    assert (await _run(_scope(bad), [b"x"]))[0][0]["status"] == 413


async def test_a_chunked_body_over_the_limit_is_refused_while_read() -> None:
    with pytest.raises(ServiceError) as caught:
        await _run(_scope([(b"transfer-encoding", b"chunked")]), [b"x" * 6, b"x" * 6])
    assert caught.value.status == 413


async def test_an_unframed_http2_body_is_still_counted() -> None:
    with pytest.raises(ServiceError):
        await _run(_scope([], http_version="2"), [b"x" * 6, b"x" * 6])


async def test_a_request_without_a_body_reaches_the_app_unwrapped() -> None:
    sent, read, unwrapped = await _run(_scope([(b"host", b"example")]), [b""])
    assert sent == []
    assert read == [b""]
    assert unwrapped is True
    _, _, wrapped = await _run(_scope([(b"content-length", b"3")]), [b"abc"])
    assert wrapped is False
