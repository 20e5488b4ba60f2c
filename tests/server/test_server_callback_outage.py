"""The web callback's page when the database fails in the middle of a sign-in: it says what
will work, and that is what works. Before the sign-in request is used up, sending the same
form again finishes the sign-in; after it (Apple's code spent), only a new sign-in can.
SQLite and PostgreSQL; the outage is a connection reset raised where the driver would raise it,
on the one statement named."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from server_helpers import Env
from sqlalchemy import event

from appleconnect.server.routes.web import RESEND, RESTART

HTML = {"accept": "text/html"}


@contextmanager
def reset_on(env: Env, fragment: str) -> Iterator[list[str]]:
    """Every statement of the service's engine containing ``fragment`` fails as a dropped
    connection does; yields the statements that failed."""
    engine = env.service.engine.sync_engine
    failed: list[str] = []

    def fail(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if fragment in statement:
            failed.append(statement)
            raise ConnectionResetError(104, "Connection reset by peer")

    event.listen(engine, "before_cursor_execute", fail)
    try:
        yield failed
    finally:
        event.remove(engine, "before_cursor_execute", fail)


async def apple_form(env: Env) -> dict[str, str]:
    start = await env.http.get("/auth/apple/start")
    assert start.status_code == 303, start.text
    return await env.consent(start.headers["location"])


def assert_outage_page(page: httpx.Response, advice: str) -> None:
    assert page.status_code == 503, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["retry-after"] == "5"
    assert advice.replace("'", "&#39;") in page.text


async def sent_again(env: Env, fragment: str, advice: str) -> httpx.Response:
    """Apple's form, failing on the statement that contains ``fragment`` (the page gives
    ``advice``); then the same form sent again: what that answers."""
    form = await apple_form(env)
    with reset_on(env, fragment) as failed:
        page = await env.http.post("/auth/apple/callback", data=form, headers=HTML)
    assert failed
    assert_outage_page(page, advice)
    return await env.http.post("/auth/apple/callback", data=form, headers=HTML)


async def test_an_outage_before_the_request_is_used_says_to_send_the_form_again(
    env: Env,
) -> None:
    again = await sent_again(env, "SET used_at", RESEND)
    assert again.status_code == 303, again.text
    finish = await env.http.get(again.headers["location"])
    assert finish.status_code == 303
    assert env.settings.session_cookie in finish.cookies


async def test_an_outage_after_the_code_is_spent_says_to_start_again(env: Env) -> None:
    again = await sent_again(env, "handoff_hash=", RESTART)
    assert again.status_code == 400, again.text  # the request is used up: resending cannot work
    used = "This sign-in was already used (each can be finished once); start again."
    assert used in again.text
    assert (await env.web_sign_in()).status_code == 303  # a new sign-in does
