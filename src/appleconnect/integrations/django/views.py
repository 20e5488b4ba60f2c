"""The integration's views: start, callback (Apple's form_post), finish and notifications."""

from __future__ import annotations

import logging

from django.contrib.auth import authenticate, login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from appleconnect import AppleConnectError

from .._flow import (
    BROWSER_COOKIE,
    FAILED,
    MAX_CALLBACK_BYTES,
    MAX_NOTIFICATION_BYTES,
    SIGN_IN_TTL,
    SignInError,
    notification_refusal,
)
from .conf import apple_sign_in

logger = logging.getLogger(__name__)


def _failed(exc: SignInError) -> HttpResponse:
    logger.warning("Sign in with Apple failed: %s", exc)
    return HttpResponse(FAILED, status=400, content_type="text/plain")


def _body(request: HttpRequest, limit: int) -> bytes | None:
    """The request body, or ``None`` when it is larger than ``limit``."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > limit:
        return None
    body = bytes(request.read(limit + 1))
    return body if len(body) <= limit else None


TOO_LARGE = "Request body too large."


@never_cache  # sets a cookie: Cache-Control no-store (also on callback, finish, notifications)
@require_GET
def start(request: HttpRequest) -> HttpResponse:
    """Send the browser to Apple, bound to it by a short-lived cookie."""
    sign_in = apple_sign_in()
    started = sign_in.start(request.GET.get("next"))
    response = HttpResponseRedirect(started.url, status=303)
    response.set_cookie(
        BROWSER_COOKIE, started.browser_value, **sign_in.cookie_options(SIGN_IN_TTL)
    )
    return response


@never_cache
@csrf_exempt  # Apple's cross-site POST; the state, looked up server-side, stands in for a token
@require_POST
def callback(request: HttpRequest) -> HttpResponse:
    """Apple's form_post: verify it, then send the browser to ``finish``."""
    body = _body(request, MAX_CALLBACK_BYTES)
    if body is None:
        return HttpResponse(TOO_LARGE, status=413, content_type="text/plain")
    try:
        token = apple_sign_in().callback(body.decode("utf-8"))
    except UnicodeDecodeError:
        return HttpResponse(FAILED, status=400, content_type="text/plain")
    except SignInError as exc:
        return _failed(exc)
    finish_url = reverse("appleconnect_apple:finish")
    return HttpResponseRedirect(f"{finish_url}?token={token}", status=303)


@never_cache
@require_GET
def finish(request: HttpRequest) -> HttpResponse:
    """The starting browser is back: log the user in with Django's session."""
    try:
        finished = apple_sign_in().finish(
            request.GET.get("token", "")[:128], request.COOKIES.get(BROWSER_COOKIE)
        )
    except SignInError as exc:
        return _failed(exc)
    user = authenticate(request, apple_sub=finished.account.sub)
    if user is None:
        return _failed(SignInError("inactive", "The user is inactive or was removed."))
    login(request, user, backend="appleconnect.integrations.django.backends.AppleBackend")
    response = HttpResponseRedirect(finished.next_path, status=303)
    response.delete_cookie(BROWSER_COOKIE)
    return response


@never_cache
@csrf_exempt  # Apple's server-to-server POST, verified by its signature
@require_POST
def notifications(request: HttpRequest) -> HttpResponse:
    """Apple's server-to-server notifications; 400 for anything Apple did not sign, 503 with
    ``Retry-After`` while Apple's keys cannot be fetched."""
    body = _body(request, MAX_NOTIFICATION_BYTES)
    if body is None:
        return HttpResponse(TOO_LARGE, status=413, content_type="text/plain")
    try:
        apple_sign_in().handle_notification(body)
    except AppleConnectError as exc:
        refusal = notification_refusal(exc)
        return HttpResponse(
            refusal.text,
            status=refusal.status,
            content_type="text/plain",
            headers=refusal.headers,
        )
    return HttpResponse(status=200)
