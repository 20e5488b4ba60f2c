"""Sign in with Apple for Flask apps (``pip install 'appleconnect[flask]'``).

::

    app = Flask(__name__)
    init_app(app, AppleSignIn(client, redirect_uri=..., store=MemoryStore()))

    @app.get("/me")
    @apple_login_required
    def me():
        return {"email": current_apple_user().email}

Routes (under ``url_prefix``, default ``/auth/apple``): ``GET /start?next=/path``,
``POST /callback`` (Apple's form_post), ``GET /finish``, ``POST /notifications`` (Apple's
server-to-server notifications), ``POST /sign-out`` and ``POST /delete-account`` (revokes at
Apple, then forgets the account).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, Response, abort, current_app, g, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

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

EXTENSION = "appleconnect"

_F = TypeVar("_F", bound=Callable[..., Any])

blueprint = Blueprint("apple_sign_in", __name__)


@blueprint.after_request
def _no_store(response: BaseResponse) -> BaseResponse:
    """Every answer of the blueprint: it sets or ends cookies, or carries a one-time token."""
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask, sign_in: AppleSignIn, *, url_prefix: str = "/auth/apple") -> None:
    """Register the routes and the :class:`AppleSignIn` on ``app``."""
    app.extensions[EXTENSION] = sign_in
    app.register_blueprint(blueprint, url_prefix=url_prefix)


def apple_sign_in() -> AppleSignIn:
    """The app's :class:`AppleSignIn` (set by :func:`init_app`)."""
    return cast(AppleSignIn, current_app.extensions[EXTENSION])


def current_apple_user() -> AppleAccount | None:
    """The signed-in account of this request, or ``None``."""
    if "apple_user" not in g:
        g.apple_user = apple_sign_in().account_for_session(request.cookies.get(SESSION_COOKIE))
    return cast(AppleAccount | None, g.apple_user)


def apple_login_required(view: _F) -> _F:
    """Answer 401 unless someone is signed in with Apple."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_apple_user() is None:
            abort(401)
        return view(*args, **kwargs)

    return cast(_F, wrapper)


def _body(limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        abort(413)
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        abort(413)
    return body


def _failed(exc: SignInError) -> BaseResponse:
    logger.warning("Sign in with Apple failed: %s", exc)
    return Response(FAILED, status=400, mimetype="text/plain")


def _cookie(response: BaseResponse, name: str, value: str, max_age: float) -> None:
    response.set_cookie(name, value, **apple_sign_in().cookie_options(max_age))


@blueprint.get("/start")
def start() -> BaseResponse:
    """Send the browser to Apple, bound to it by a short-lived cookie."""
    started = apple_sign_in().start(request.args.get("next", type=str))
    response = redirect(started.url, code=303)
    _cookie(response, BROWSER_COOKIE, started.browser_value, SIGN_IN_TTL)
    return response


@blueprint.post("/callback")
def callback() -> BaseResponse:
    """Apple's form_post: verify it, then send the browser to ``/finish``."""
    try:
        token = apple_sign_in().callback(_body(MAX_CALLBACK_BYTES).decode("utf-8"))
    except UnicodeDecodeError:
        return Response(FAILED, status=400, mimetype="text/plain")
    except SignInError as exc:
        return _failed(exc)
    return redirect(url_for(".finish", token=token), code=303)


@blueprint.get("/finish")
def finish() -> BaseResponse:
    """The starting browser is back: open its session."""
    sign_in = apple_sign_in()
    try:
        finished = sign_in.finish(
            request.args.get("token", "")[:128], request.cookies.get(BROWSER_COOKIE)
        )
    except SignInError as exc:
        return _failed(exc)
    response = redirect(finished.next_path, code=303)
    response.delete_cookie(BROWSER_COOKIE)
    _cookie(response, SESSION_COOKIE, finished.session_token, sign_in.session_ttl)
    return response


@blueprint.post("/notifications")
def notifications() -> BaseResponse:
    """Apple's server-to-server notifications; 400 for anything Apple did not sign, 503 with
    ``Retry-After`` while Apple's keys cannot be fetched."""
    try:
        apple_sign_in().handle_notification(_body(MAX_NOTIFICATION_BYTES))
    except AppleConnectError as exc:
        refusal = notification_refusal(exc)
        return Response(
            refusal.text, status=refusal.status, mimetype="text/plain", headers=refusal.headers
        )
    return Response(status=200)


@blueprint.post("/sign-out")
def sign_out() -> BaseResponse:
    """End this browser's session."""
    apple_sign_in().sign_out(request.cookies.get(SESSION_COOKIE))
    response = Response(status=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


@blueprint.post("/delete-account")
@apple_login_required
def delete_account() -> BaseResponse:
    """Delete the signed-in account: revoke at Apple first, then forget it (503 if Apple cannot
    be reached: nothing is deleted, try again)."""
    user = current_apple_user()
    assert user is not None
    try:
        apple_sign_in().delete_account(user.sub)
    except AppleConnectError as exc:
        logger.warning("Could not revoke at Apple; account kept: %s", exc)
        return Response("Apple cannot be reached; try again.", status=503, mimetype="text/plain")
    response = Response(status=204)
    response.delete_cookie(SESSION_COOKIE)
    return response
