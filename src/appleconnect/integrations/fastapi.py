"""Sign in with Apple for FastAPI and Starlette apps (``pip install 'appleconnect[fastapi]'``).

::

    app = FastAPI()
    app.state.apple_sign_in = AppleSignIn(client, redirect_uri=..., store=MemoryStore())
    app.include_router(router, prefix="/auth/apple")

    @app.get("/me")
    def me(user: CurrentAppleUser) -> dict[str, str | None]:
        return {"sub": user.sub, "email": user.email}

Routes (under the prefix): ``GET /start?next=/path``, ``POST /callback`` (Apple's form_post),
``GET /finish``, ``POST /notifications`` (Apple's server-to-server notifications),
``POST /sign-out`` and ``POST /delete-account`` (revokes at Apple, then forgets the account).
The handlers are synchronous (the library's client is), so FastAPI runs them in its thread pool.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from appleconnect import AppleConnectError

from ._flow import (
    BROWSER_COOKIE,
    FAILED,
    MAX_CALLBACK_BYTES,
    MAX_NOTIFICATION_BYTES,
    SESSION_COOKIE,
    SIGN_IN_TTL,
    AppleSignIn,
    SignInError,
    notification_refusal,
)
from ._records import AppleAccount

logger = logging.getLogger(__name__)


async def get_apple_sign_in(request: Request) -> AppleSignIn:
    """The app's :class:`AppleSignIn` (``app.state.apple_sign_in``); a coroutine function, so
    that FastAPI does not send it to its thread pool."""
    sign_in = getattr(request.app.state, "apple_sign_in", None)
    if not isinstance(sign_in, AppleSignIn):
        raise RuntimeError("Set app.state.apple_sign_in = AppleSignIn(...) before serving.")
    return sign_in


SignInDep = Annotated[AppleSignIn, Depends(get_apple_sign_in)]


async def current_apple_user(request: Request, sign_in: SignInDep) -> AppleAccount:
    """The signed-in account; 401 without a valid session."""
    account = sign_in.account_for_session(request.cookies.get(SESSION_COOKIE))
    if account is None:
        raise HTTPException(status_code=401, detail="Not signed in.")
    return account


CurrentAppleUser = Annotated[AppleAccount, Depends(current_apple_user)]

router = APIRouter()


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(status_code=413, detail="Request body too large.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(status_code=413, detail="Request body too large.")
    return body


def _no_store(response: Response) -> Response:
    """Every answer of the router: it sets or ends cookies, or carries a one-time token."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _failed(exc: SignInError) -> Response:
    logger.warning("Sign in with Apple failed: %s", exc)
    return _no_store(PlainTextResponse(FAILED, status_code=400))


@router.get("/start")
def start(
    sign_in: SignInDep, next: Annotated[str | None, Query(max_length=512)] = None
) -> Response:
    """Send the browser to Apple, bound to it by a short-lived cookie."""
    started = sign_in.start(next)
    response = RedirectResponse(started.url, status_code=303)
    response.set_cookie(
        BROWSER_COOKIE, started.browser_value, **sign_in.cookie_options(SIGN_IN_TTL)
    )
    return _no_store(response)


@router.post("/callback")
async def callback(request: Request, sign_in: SignInDep) -> Response:
    """Apple's form_post: verify it, then send the browser to ``/finish``."""
    from starlette.concurrency import run_in_threadpool

    body = await _body(request, MAX_CALLBACK_BYTES)
    try:
        text = body.decode("utf-8")
        token = await run_in_threadpool(sign_in.callback, text)
    except UnicodeDecodeError:
        return _no_store(PlainTextResponse(FAILED, status_code=400))
    except SignInError as exc:
        return _failed(exc)
    finish_url = f"{request.url.path.rsplit('/', 1)[0]}/finish?token={token}"
    return _no_store(RedirectResponse(finish_url, 303))


@router.get("/finish")
def finish(
    request: Request, sign_in: SignInDep, token: Annotated[str, Query(max_length=128)] = ""
) -> Response:
    """The starting browser is back: open its session."""
    try:
        finished = sign_in.finish(token, request.cookies.get(BROWSER_COOKIE))
    except SignInError as exc:
        return _failed(exc)
    response = RedirectResponse(finished.next_path, status_code=303)
    response.delete_cookie(BROWSER_COOKIE)
    response.set_cookie(
        SESSION_COOKIE, finished.session_token, **sign_in.cookie_options(sign_in.session_ttl)
    )
    return _no_store(response)


@router.post("/notifications")
async def notifications(request: Request, sign_in: SignInDep) -> Response:
    """Apple's server-to-server notifications; 400 for anything Apple did not sign, 503 with
    ``Retry-After`` while Apple's keys cannot be fetched."""
    from starlette.concurrency import run_in_threadpool

    body = await _body(request, MAX_NOTIFICATION_BYTES)
    try:
        await run_in_threadpool(sign_in.handle_notification, body)
    except AppleConnectError as exc:
        refusal = notification_refusal(exc)
        return PlainTextResponse(refusal.text, refusal.status, headers=refusal.headers)
    return Response(status_code=200)


@router.post("/sign-out")
def sign_out(request: Request, sign_in: SignInDep) -> Response:
    """End this browser's session."""
    sign_in.sign_out(request.cookies.get(SESSION_COOKIE))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return _no_store(response)


@router.post("/delete-account")
def delete_account(user: CurrentAppleUser, sign_in: SignInDep) -> Response:
    """Delete the signed-in account: revoke at Apple first, then forget it (503 if Apple cannot
    be reached: nothing is deleted, try again)."""
    try:
        sign_in.delete_account(user.sub)
    except AppleConnectError as exc:
        logger.warning("Could not revoke at Apple; account kept: %s", exc)
        return PlainTextResponse("Apple cannot be reached; try again.", status_code=503)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return _no_store(response)
