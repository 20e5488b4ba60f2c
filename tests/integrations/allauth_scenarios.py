"""django-allauth's Apple provider, unmodified, against a running emulator: run as a script in a
process of its own (its Django settings cannot share a process with the Django integration's
tests). Reads the emulator's URL and credentials from the environment, prints a JSON report.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import django
import httpx
from django.conf import settings

BASE = os.environ["EMULATOR_URL"]
CALLBACK = "http://testserver/accounts/apple/login/callback/"

settings.configure(
    SECRET_KEY="allauth-" + "s" * 50,
    ALLOWED_HOSTS=["testserver"],
    ROOT_URLCONF=__name__,
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": Path(tempfile.mkdtemp(prefix="allauth-")) / "db",
        }
    },
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "allauth",
        "allauth.account",
        "allauth.socialaccount",
        "allauth.socialaccount.providers.apple",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "allauth.account.middleware.AccountMiddleware",
    ],
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
    AUTHENTICATION_BACKENDS=["allauth.account.auth_backends.AuthenticationBackend"],
    SOCIALACCOUNT_LOGIN_ON_GET=True,
    SOCIALACCOUNT_STORE_TOKENS=True,
    SOCIALACCOUNT_PROVIDERS={
        "apple": {
            "SCOPE": ["name", "email"],
            "APPS": [
                {
                    "client_id": os.environ["APPLE_SERVICES_ID"],
                    "secret": os.environ["APPLE_KEY_ID"],
                    "key": os.environ["APPLE_TEAM_ID"],
                    "settings": {"certificate_key": os.environ["APPLE_PRIVATE_KEY"]},
                }
            ],
        }
    },
    USE_TZ=True,
)
django.setup()

from allauth.socialaccount.models import SocialAccount, SocialToken  # noqa: E402
from allauth.socialaccount.providers.apple.views import AppleOAuth2Adapter  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import include, path  # noqa: E402

urlpatterns = [path("accounts/", include("allauth.urls"))]

AppleOAuth2Adapter.authorize_url = f"{BASE}/auth/authorize"
AppleOAuth2Adapter.access_token_url = f"{BASE}/auth/token"
AppleOAuth2Adapter.public_key_url = f"{BASE}/auth/keys"


def control(method: str, path_: str, body: dict[str, Any]) -> Any:
    answer = httpx.request(method, f"{BASE}/emulator{path_}", json=body, timeout=30)
    answer.raise_for_status()
    return answer.json() if answer.content else None


def sign_in(account: str, name: str | None, share_email: bool = True) -> dict[str, Any]:
    """allauth's login view, the consent at the emulator, Apple's form_post, allauth's finish."""
    browser, apple_side = Client(), Client()
    started = browser.get("/accounts/apple/login/")
    url = started["Location"]
    params = dict(parse_qsl(urlsplit(url).query))
    consent = {**params, "account": account, "share_email": share_email}
    if name:
        consent["name"] = name
    delivered = control("POST", "/authorize", consent)["params"]
    posted = apple_side.post("/accounts/apple/login/callback/", delivered)
    # The browser follows the redirect with the cookie allauth set on the callback's answer.
    browser.cookies.update(apple_side.cookies)
    finished = browser.get(posted["Location"])
    return {"auth_url": url, "finished": finished.status_code, "to": finished.get("Location")}


def refresh_works(refresh_token: str) -> bool:
    """Whether Apple (the emulator) still accepts the refresh token, through the library."""
    from appleconnect import AppleClient, ClientSecret, InvalidGrant

    services_id = os.environ["APPLE_SERVICES_ID"]
    secret = ClientSecret(
        os.environ["APPLE_TEAM_ID"],
        os.environ["APPLE_KEY_ID"],
        services_id,
        os.environ["APPLE_PRIVATE_KEY"],
    )
    with AppleClient(services_id, secret, base_url=BASE) as apple:
        try:
            apple.refresh(refresh_token)
        except InvalidGrant:
            return False
    return True


def stored_in_the_clear() -> bool:
    """Whether the refresh tokens read straight from allauth's table (``token_secret``, a plain
    ``TextField``) are themselves accepted by Apple: stored as they came, not encrypted."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT token_secret FROM socialaccount_socialtoken")
        raw = [value for (value,) in cursor.fetchall() if value]
    return bool(raw) and all(refresh_works(value) for value in raw)


def main() -> None:
    call_command("migrate", verbosity=0)
    control("POST", f"/clients/{os.environ['APPLE_SERVICES_ID']}/redirect-uris", {"uri": CALLBACK})
    report: dict[str, Any] = {}
    first = sign_in("li.wei@example.com", "Li Wei", share_email=False)
    report["first"] = first
    report["nonce_sent"] = "nonce" in dict(parse_qsl(urlsplit(first["auth_url"]).query))
    user = get_user_model().objects.get()
    account = SocialAccount.objects.get(user=user)
    report["name_first"] = [user.first_name, user.last_name]
    report["extra_data"] = account.extra_data
    token = SocialToken.objects.filter(account=account).first()
    report["refresh_token_kept"] = bool(token and token.token_secret)
    control("POST", "/accounts/li.wei@example.com/revoke-consent", {"wait": True})
    report["second"] = sign_in("li.wei@example.com", "Other Name")
    user.refresh_from_db()
    report["name_after"] = [user.first_name, user.last_name]
    refresh = SocialToken.objects.filter(account__user=user).values_list("token_secret", flat=True)
    kept = [r for r in refresh if r]
    report["refresh_token_in_clear_in_the_table"] = stored_in_the_clear()
    user.delete()
    report["refresh_valid_after_delete"] = [refresh_works(r) for r in kept]
    package = Path(sys.modules["allauth"].__file__ or "").parent
    texts = [p.read_text(errors="replace") for p in package.rglob("*.py")]
    report["handles"] = {
        needle: any(needle in text for text in texts)
        for needle in ("consent-revoked", "email-disabled", "account-delete", "transfer_sub")
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
