"""Settings: sources, sandbox default, and what production mode refuses (naming the setting)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from appleconnect.server.security import Encryptor, hash_token, load_encryptor, new_token
from appleconnect.server.settings import Settings, SettingsError, load_settings

PEM_FILE = "AuthKey_KEYID12345.p8"


def production(tmp_path: Path, **env: str) -> dict[str, str]:
    (tmp_path / PEM_FILE).write_text("-----BEGIN PRIVATE KEY-----\n...\n")
    base = {
        "APPLECONNECT_PUBLIC_URL": "https://login.example.com",
        "APPLECONNECT_CLIENT_ID": "com.example.web",
        "APPLECONNECT_APP_IDS": "com.example.app, com.example.app2",
        "APPLECONNECT_TEAM_ID": "ABCDE12345",
        "APPLECONNECT_KEY_ID": "KEYID12345",
        "APPLECONNECT_PRIVATE_KEY_FILE": str(tmp_path / PEM_FILE),
        "APPLECONNECT_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    base.update(env)
    return base


def test_no_configuration_means_sandbox(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.mode == "sandbox"
    assert settings.effective_database_url.endswith("/appleconnect.db")
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")


def test_environment_configures_production(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, environ=production(tmp_path))
    settings.validate()
    assert settings.mode == "production"
    assert settings.audiences == ("com.example.web", "com.example.app", "com.example.app2")
    assert settings.cookie_secure
    assert "Secret('**********')" in repr(settings)
    assert settings.encryption_key.get() not in repr(settings)


def test_toml_file_with_sections(tmp_path: Path) -> None:
    config = tmp_path / "appleconnect.toml"
    config.write_text(
        'public_url = "https://login.example.com"\n'
        'client_id = "com.example.web"\n'
        'roles = ["subscriber", "editor"]\n'
        'default_role = "editor"\n'
        "[smtp]\n"
        'host = "mail.example.com"\n'
        "port = 465\n"
        'security = "tls"\n'
    )
    settings = load_settings(data_dir=tmp_path, config=config, environ={})
    assert settings.mode == "production"
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        "mail.example.com",
        465,
        "tls",
    )
    assert settings.default_role == "editor"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"APPLECONNECT_ENCRYPTION_KEY": ""}, "encryption_key"),
        ({"APPLECONNECT_PUBLIC_URL": "http://login.example.com"}, "public_url"),
        ({"APPLECONNECT_APPLE_BASE_URL": "http://appleid.apple.com"}, "apple_base_url"),
        ({"APPLECONNECT_APPLE_BASE_URL": "HTTP://appleid.apple.com"}, "apple_base_url"),
        ({"APPLECONNECT_APPLE_BASE_URL": "appleid.apple.com"}, "apple_base_url"),
        ({"APPLECONNECT_KEYS_REFETCH_INTERVAL": "-1"}, "keys_refetch_interval"),
        ({"APPLECONNECT_KEYS_FAILURE_BACKOFF": "601"}, "keys_failure_backoff"),
        ({"APPLECONNECT_REDIRECT_URI": "https://127.0.0.1/cb"}, "redirect_uri"),
        ({"APPLECONNECT_REDIRECT_URI": "https://localhost/cb"}, "redirect_uri"),
        ({"APPLECONNECT_REDIRECT_URI": "http://login.example.com/cb"}, "redirect_uri"),
        ({"APPLECONNECT_APP_REDIRECT_URIS": "https://x.example.com/#frag"}, "app_redirect_uris"),
        ({"APPLECONNECT_DEFAULT_ROLE": "king"}, "default_role"),
        ({"APPLECONNECT_CLIENT_ID": ""}, "client_id"),
        (
            {"APPLECONNECT_SMTP_HOST": "m.example.com", "APPLECONNECT_SMTP_SECURITY": "none"},
            "smtp_security",
        ),
    ],
)
def test_production_refuses(tmp_path: Path, env: dict[str, str], field: str) -> None:
    settings = load_settings(data_dir=tmp_path, environ=production(tmp_path, **env))
    with pytest.raises(SettingsError) as caught:
        settings.validate()
    assert str(caught.value).startswith(field + ":")


def test_sandbox_allows_plain_http_and_no_key(tmp_path: Path) -> None:
    env = production(
        tmp_path,
        APPLECONNECT_MODE="sandbox",
        APPLECONNECT_ENCRYPTION_KEY="",
        APPLECONNECT_PUBLIC_URL="http://127.0.0.1:8000",
    )
    load_settings(data_dir=tmp_path, environ=env).validate()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APPLECONNECT_NOPE": "1"}, "APPLECONNECT_NOPE: unknown setting"),
        ({"APPLECONNECT_SESSION_TTL": "soon"}, "session_ttl:"),
        ({"APPLECONNECT_WELCOME_EMAIL": "perhaps"}, "welcome_email:"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(data_dir=tmp_path, environ=env)


def test_bad_toml_and_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("this is = = not toml")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(config=config, environ={})
    config.write_text('colour = "blue"\n')
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        load_settings(config=config, environ={})


def test_encryption_round_trip_rotation_and_wrong_key(tmp_path: Path) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    secret = Encryptor([old]).encrypt("refresh-token")
    assert "refresh-token" not in secret
    assert Encryptor([new, old]).decrypt(secret) == "refresh-token"
    with pytest.raises(ValueError, match="not the one it was encrypted with"):
        Encryptor([new]).decrypt(secret)
    with pytest.raises(SettingsError, match="encryption_key"):
        Encryptor([b"short"])
    sandbox = Settings(mode="sandbox", data_dir=tmp_path)
    first = load_encryptor(sandbox)
    assert load_encryptor(sandbox).decrypt(first.encrypt("x")) == "x"
    assert (tmp_path / "encryption.key").stat().st_mode & 0o777 == 0o600


def test_tokens_are_long_random_and_stored_hashed() -> None:
    tokens = {new_token("acs_") for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert len(token) - 4 >= 43  # 256 bits in base64url
    assert hash_token(token) != token
    assert len(hash_token(token)) == 64
