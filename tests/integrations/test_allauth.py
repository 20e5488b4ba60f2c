"""django-allauth 65's Apple provider, unmodified, against the emulator with the settings of
docs/testing.md: its column of the comparison table in docs/integrations.md. It runs in a process
of its own (``allauth_scenarios.py``: its Django settings cannot share this process with the
Django integration's), against the session's emulator over loopback HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from appleconnect.testing import AppleEmulator

SCRIPT = Path(__file__).resolve().parent / "allauth_scenarios.py"


@pytest.fixture(scope="module")
def report(apple_emulator_session: AppleEmulator) -> dict[str, Any]:
    c = apple_emulator_session.credentials
    environment = {
        **os.environ,
        "EMULATOR_URL": apple_emulator_session.base_url,
        "APPLE_SERVICES_ID": c.services_id,
        "APPLE_KEY_ID": c.key_id,
        "APPLE_TEAM_ID": c.team_id,
        "APPLE_PRIVATE_KEY": c.private_key_pem,
    }
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_documented_settings_complete_a_sign_in(report: dict[str, Any]) -> None:
    assert report["first"]["finished"] == 302
    assert report["first"]["to"] == "/accounts/profile/"
    assert report["extra_data"]["aud"] == "com.example.web"


def test_no_nonce_is_sent(report: dict[str, Any]) -> None:
    assert report["nonce_sent"] is False
    assert "nonce" not in parse_qs(urlsplit(report["first"]["auth_url"]).query)
    assert "nonce" not in report["extra_data"]


def test_the_name_is_kept_from_the_first_sign_in(report: dict[str, Any]) -> None:
    assert report["name_first"] == ["Li", "Wei"]
    assert report["second"]["finished"] == 302  # signed in again, "Other Name" typed
    assert report["name_after"] == ["Li", "Wei"]


def test_the_relay_flag_is_only_the_raw_claim(report: dict[str, Any]) -> None:
    assert report["extra_data"]["is_private_email"] == "true"  # Apple's string, in extra_data
    assert report["extra_data"]["email"].endswith("@privaterelay.appleid.com")


def test_deleting_the_user_does_not_revoke_at_apple(report: dict[str, Any]) -> None:
    assert report["refresh_token_kept"] is True  # with SOCIALACCOUNT_STORE_TOKENS = True
    assert report["refresh_valid_after_delete"] == [True]


def test_the_refresh_token_is_stored_in_the_clear(report: dict[str, Any]) -> None:
    # SocialToken.token_secret is a plain TextField: the value in the table is Apple's token.
    assert report["refresh_token_in_clear_in_the_table"] is True


def test_no_notification_or_transfer_handling_in_the_package(report: dict[str, Any]) -> None:
    assert report["handles"] == {
        "consent-revoked": False,
        "email-disabled": False,
        "account-delete": False,
        "transfer_sub": False,
    }
