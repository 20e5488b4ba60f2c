"""The Django integration, with Django's test client against the ``apple_emulator`` fixture.

Django is configured here (a SQLite file in a temporary folder, migrated once); each test starts
from empty tables. This module is its own URLconf.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import django
import httpx
import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from integration_helpers import CALLBACK, NOTIFICATIONS, failure_reasons

from appleconnect import InvalidGrant
from appleconnect.testing import AppleEmulator

DB_DIR = Path(tempfile.mkdtemp(prefix="appleconnect-django-"))
if not settings.configured:
    settings.configure(
        SECRET_KEY="django-insecure-" + "t" * 50,
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB_DIR / "db"}},
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "appleconnect.integrations.django",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        AUTHENTICATION_BACKENDS=["appleconnect.integrations.django.backends.AppleBackend"],
        USE_TZ=True,
    )
    django.setup()

from django.contrib.auth import get_user_model  # noqa: E402 - needs the settings above
from django.contrib.sessions.models import Session  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import CommandError, SystemCheckError  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import include, path  # noqa: E402

from appleconnect.integrations.django.conf import apple_sign_in  # noqa: E402
from appleconnect.integrations.django.models import (  # noqa: E402
    AppleIdentity,
    AppleNotificationSeen,
    AppleSignInRequest,
)
from appleconnect.integrations.django.store import account_of  # noqa: E402

KEY = Fernet.generate_key().decode()
MARIA = "maria.ruiz@example.com"
LI = "li.wei@example.com"


def me(request: HttpRequest) -> JsonResponse:
    if not request.user.is_authenticated:
        return JsonResponse({}, status=401)
    identity = request.user.apple_identity
    return JsonResponse(
        {
            "sub": identity.sub,
            "email": identity.email,
            "private": identity.is_private_email,
            "name": request.user.get_full_name(),
            "forwarding": identity.email_forwarding,
        }
    )


urlpatterns = [
    path("auth/apple/", include("appleconnect.integrations.django.urls")),
    path("me", me),
]


@pytest.fixture(scope="module", autouse=True)
def database() -> Iterator[None]:
    call_command("migrate", verbosity=0)
    yield
    shutil.rmtree(DB_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def configured(apple_emulator: AppleEmulator) -> Iterator[None]:
    apple_emulator.register_redirect_uri(CALLBACK)
    conf = {"CLIENT": apple_emulator.client(), "REDIRECT_URI": CALLBACK, "ENCRYPTION_KEY": KEY}
    with override_settings(APPLE_SIGN_IN=conf):
        yield
    for model in (AppleSignInRequest, AppleNotificationSeen, Session, get_user_model()):
        model.objects.all().delete()


@pytest.fixture
def browser() -> Client:
    return Client()


@pytest.fixture
def apple_side() -> Client:
    """Apple's form_post is a cross-site POST: it carries none of the browser's Lax cookies."""
    return Client()


def form_post(client: Client, form: dict[str, str]) -> HttpResponse:
    """POST ``form`` as Apple's form_post does (url-encoded) to the callback."""
    body = str(httpx.QueryParams(form))
    kind = "application/x-www-form-urlencoded"
    return client.post("/auth/apple/callback", body, content_type=kind, secure=True)


def sign_in(
    emulator: AppleEmulator,
    browser: Client,
    apple_side: Client,
    account: str = MARIA,
    **consent: object,
) -> str:
    started = browser.get("/auth/apple/start", {"next": "/me"}, secure=True)
    assert started.status_code == 303
    signed = emulator.authorize(started["Location"], account, **consent)  # type: ignore[arg-type]
    posted = form_post(apple_side, signed.form)
    assert posted.status_code == 303, posted.content
    finished = browser.get(posted["Location"], secure=True)
    assert finished.status_code == 303, finished.content
    return str(finished["Location"])


def test_first_sign_in_creates_the_user_and_the_identity(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    assert sign_in(apple_emulator, browser, apple_side, name="María Ruiz") == "/me"
    assert browser.get("/me", secure=True).json() == {
        "sub": apple_emulator.sub_for(MARIA),
        "email": MARIA,
        "private": False,
        "name": "María Ruiz",
        "forwarding": True,
    }
    user = get_user_model().objects.get()
    assert (user.email, user.first_name, user.has_usable_password()) == (MARIA, "María", False)


def test_name_from_the_first_sign_in_and_relay_flag(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    sign_in(apple_emulator, browser, apple_side, LI, share_email=False, name="Li Wei")
    apple_emulator.revoke_consent(LI)
    sign_in(apple_emulator, browser, apple_side, LI, share_email=False, name="Other Name")
    identity = AppleIdentity.objects.get()
    assert (identity.first_name, identity.last_name) == ("Li", "Wei")
    assert identity.is_private_email is True
    assert identity.email.endswith("@privaterelay.appleid.com")


def test_state_once_and_bound_to_the_browser(
    apple_emulator: AppleEmulator,
    browser: Client,
    apple_side: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = browser.get("/auth/apple/start", secure=True)
    signed = apple_emulator.authorize(started["Location"])
    posted = form_post(apple_side, signed.form)
    assert form_post(apple_side, signed.form).status_code == 400
    other = Client()  # another browser, with a sign-in of its own
    assert other.get("/auth/apple/start", secure=True).status_code == 303
    assert "apple_signin_browser" in other.cookies
    assert other.get(posted["Location"], secure=True).status_code == 400
    assert other.get("/me", secure=True).status_code == 401
    assert failure_reasons(caplog) == ["unknown_state", "browser"]
    assert not AppleIdentity.objects.exists()


def test_a_code_for_another_nonce_is_refused(
    apple_emulator: AppleEmulator,
    browser: Client,
    apple_side: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = browser.get("/auth/apple/start", secure=True)
    state = httpx.URL(started["Location"]).params["state"]
    forged = apple_emulator.sign_in(
        state=state, nonce="attacker-nonce-0123456789", redirect_uri=CALLBACK
    )
    assert form_post(apple_side, forged.form).status_code == 400
    assert failure_reasons(caplog) == ["token"]
    assert "nonce" in caplog.text


def test_notifications_are_applied(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    from django.core.wsgi import get_wsgi_application

    sign_in(apple_emulator, browser, apple_side, LI, share_email=False)
    apple_emulator.set_notification_url(NOTIFICATIONS, wsgi_app=get_wsgi_application())
    apple_emulator.set_email_forwarding(LI, False)
    assert browser.get("/me", secure=True).json()["forwarding"] is False
    apple_emulator.set_email_forwarding(LI, True)
    assert browser.get("/me", secure=True).json()["forwarding"] is True
    [revoked] = apple_emulator.revoke_consent(LI)
    assert revoked.status == "delivered"
    assert browser.get("/me", secure=True).status_code == 401  # signed out everywhere
    assert AppleIdentity.objects.get().encrypted_refresh_token == ""
    sign_in(apple_emulator, browser, apple_side, LI)
    [deleted] = apple_emulator.delete_account(LI)
    assert deleted.status == "delivered"
    assert not get_user_model().objects.exists()


def test_a_forged_notification_is_refused(apple_side: Client) -> None:
    forged = '{"payload": "eyJraWQiOiJ4IiwiYWxnIjoiUlMyNTYifQ.eyJzdWIiOiJ4In0.c2ln"}'
    answer = apple_side.post(
        "/auth/apple/notifications", forged, content_type="application/json", secure=True
    )
    assert answer.status_code == 400


def test_a_notification_during_a_key_outage_asks_apple_to_deliver_again(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    sign_in(apple_emulator, browser, apple_side, LI)
    apple_emulator.rotate_keys()
    apple_emulator.fail("keys", count=None, probability=1)
    apple_emulator.advance_clock(61)
    [sent] = apple_emulator.delete_account(LI)
    answer = apple_side.post(
        "/auth/apple/notifications",
        json.dumps(sent.body),
        content_type="application/json",
        secure=True,
    )
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert AppleIdentity.objects.exists()


def test_the_management_command_revokes_then_deletes(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    sign_in(apple_emulator, browser, apple_side)
    identity = AppleIdentity.objects.select_related("user").get()
    refresh = apple_sign_in().refresh_token_of(account_of(identity))
    username = identity.user.get_username()
    out = io.StringIO()
    call_command("apple_delete_user", username, stdout=out)
    assert "Revoked the Apple tokens" in out.getvalue()
    assert not get_user_model().objects.exists()
    with pytest.raises(InvalidGrant, match="revoked"):
        apple_emulator.client().refresh(refresh)


def test_the_management_command_keeps_the_user_when_apple_is_down(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    sign_in(apple_emulator, browser, apple_side)
    username = get_user_model().objects.get().get_username()
    apple_emulator.fail("revoke", "status", status=503, count=2)
    with pytest.raises(CommandError, match="user kept"):
        call_command("apple_delete_user", username)
    assert get_user_model().objects.filter(username=username).exists()


def test_the_table_holds_only_the_encrypted_refresh_token(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    started = browser.get("/auth/apple/start", secure=True)
    posted = form_post(apple_side, apple_emulator.authorize(started["Location"]).form)
    waiting = json.dumps(AppleSignInRequest.objects.get(kind="completed").data)
    browser.get(posted["Location"], secure=True)
    with connection.cursor() as cursor:
        table = AppleIdentity._meta.db_table
        cursor.execute(f"SELECT encrypted_refresh_token FROM {table}")  # noqa: S608
        [(column,)] = cursor.fetchall()
        columns = [c.name for c in connection.introspection.get_table_description(cursor, table)]
    assert "refresh_token" not in columns  # the clear column is gone
    refresh = apple_sign_in().refresh_token_of(account_of(AppleIdentity.objects.get()))
    assert refresh is not None
    assert refresh.startswith("r")
    assert refresh not in column
    assert refresh not in waiting
    assert apple_emulator.client().refresh(refresh).access_token  # it decrypts to Apple's token


def test_the_management_command_with_a_wrong_key_keeps_the_user(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    sign_in(apple_emulator, browser, apple_side)
    username = get_user_model().objects.get().get_username()
    conf = {**settings.APPLE_SIGN_IN, "ENCRYPTION_KEY": Fernet.generate_key().decode()}
    with (
        override_settings(APPLE_SIGN_IN=conf),
        pytest.raises(CommandError, match=r"cannot be decrypted .* User kept\."),
    ):
        call_command("apple_delete_user", username)
    assert get_user_model().objects.filter(username=username).exists()


def test_django_refuses_to_start_without_an_encryption_key() -> None:
    conf = {k: v for k, v in settings.APPLE_SIGN_IN.items() if k != "ENCRYPTION_KEY"}
    with override_settings(APPLE_SIGN_IN=conf):
        with pytest.raises(ImproperlyConfigured, match=r"Set APPLE_SIGN_IN\['ENCRYPTION_KEY'\]"):
            apple_sign_in()
        with pytest.raises(SystemCheckError, match=r"appleconnect_apple\.E001"):
            call_command("check")
    with (
        override_settings(APPLE_SIGN_IN={**conf, "ENCRYPTION_KEY": "not-a-key"}),
        pytest.raises(ImproperlyConfigured, match=r"ENCRYPTION_KEY'\] is wrong: .* not a Fernet"),
    ):
        apple_sign_in()


def test_the_migration_encrypts_the_tokens_kept_in_the_clear() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("appleconnect_apple", "0001_initial")])
    old = executor.loader.project_state(("appleconnect_apple", "0001_initial")).apps
    user = old.get_model(settings.AUTH_USER_MODEL).objects.create(username="legacy")
    identities = old.get_model("appleconnect_apple", "AppleIdentity").objects
    identities.create(user=user, sub="001.legacy", refresh_token="r-legacy-token")
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes("appleconnect_apple"))
    identity = AppleIdentity.objects.get(sub="001.legacy")
    assert "r-legacy-token" not in identity.encrypted_refresh_token
    assert apple_sign_in().refresh_token_of(account_of(identity)) == "r-legacy-token"


def test_answers_that_set_cookies_or_carry_tokens_are_not_cached(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    started = browser.get("/auth/apple/start", secure=True)
    posted = form_post(apple_side, apple_emulator.authorize(started["Location"]).form)
    finished = browser.get(posted["Location"], secure=True)
    assert "sessionid" in finished.cookies
    again = browser.get(posted["Location"], secure=True)  # the failure page
    for answer in (started, posted, finished, again):
        assert "no-store" in answer["Cache-Control"]


def test_bodies_larger_than_apple_sends_are_refused_unread(
    apple_emulator: AppleEmulator, browser: Client, apple_side: Client
) -> None:
    signed = apple_emulator.authorize(browser.get("/auth/apple/start", secure=True)["Location"])
    assert form_post(apple_side, {**signed.form, "padding": "x" * 17 * 1024}).status_code == 413
    assert form_post(apple_side, signed.form).status_code == 303  # the state was not used up
    big = apple_side.post(
        "/auth/apple/notifications", "{" * (65 * 1024), content_type="application/json", secure=True
    )
    assert big.status_code == 413


def test_expired_sign_in_requests_are_removed_as_new_ones_come(browser: Client) -> None:
    AppleSignInRequest.objects.create(kind="pending", key_hash="0" * 64, data={}, expires_at=1.0)
    assert browser.get("/auth/apple/start", secure=True).status_code == 303
    assert list(AppleSignInRequest.objects.values_list("kind", flat=True)) == ["pending"]
    assert not AppleSignInRequest.objects.filter(key_hash="0" * 64).exists()
