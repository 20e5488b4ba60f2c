"""``appleconnect users migrate`` end to end: the real command, with ``--data-dir`` and
``--config``, against the emulator served by uvicorn on a loopback port, with two teams (the
sending team A and the recipient team B, TN3159)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appleconnect.cli import main
from appleconnect.emulator import create_emulator_app
from appleconnect.server import create_app, load_settings, store

PUBLIC = "https://login.example.com"
TEAM_B = "TEAMB00001"
ACCOUNTS = ("maria.ruiz@example.com", "li.wei@example.com")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key: production talks to Apple over HTTPS only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "apple-cert.pem", directory / "apple-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def apple(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """The emulator behind real uvicorn and TLS on 127.0.0.1 (its certificate trusted through
    SSL_CERT_FILE, which httpx reads); yields its base URL and its state."""
    app = create_emulator_app(state_dir=tmp_path / "emulator")
    cert_file, key_file = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", ws="none", ssl_certfile=cert_file, ssl_keyfile=key_file
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive(), "the emulator's server stopped"
            assert time.monotonic() < deadline, "the emulator did not start"
            time.sleep(0.02)
        yield f"https://127.0.0.1:{port}", app.state.emulator
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def write_config(path: Path, base_url: str, key: str, team: dict[str, str]) -> Path:
    key_file = path.with_suffix(".p8")
    key_file.write_text(team["private_key_pem"])
    path.write_text(
        f'mode = "production"\n'
        f'public_url = "{PUBLIC}"\n'
        f'apple_base_url = "{base_url}"\n'
        f'encryption_key = "{key}"\n'
        f'team_id = "{team["team_id"]}"\n'
        f'key_id = "{team["key_id"]}"\n'
        f'private_key_file = "{key_file}"\n'
        f'client_id = "{team["services_id"]}"\n'
        f'app_ids = ["{team["app_id"]}"]\n'
    )
    return path


async def sign_in(data_dir: Path, config: Path, base_url: str, app_id: str) -> None:
    """Team A's service signs each account in through ``apple_connect`` (native flow)."""
    app = create_app(load_settings(data_dir=data_dir, config=config, environ={}))
    async with app.router.lifespan_context(app):
        async with app.state.container.sessions() as db:
            key = await store.create_api_key(db=db, name="tests")
            await db.commit()
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url=PUBLIC) as service,
            httpx.AsyncClient(base_url=base_url) as emulator,
        ):
            for account in ACCOUNTS:
                authorized = await emulator.post(
                    "/emulator/authorize",
                    json={
                        "client_id": app_id,
                        "response_type": "code id_token",
                        "scope": "name email",
                        "state": "s" * 20,
                        "account": account,
                    },
                )
                assert authorized.status_code == 200, authorized.text
                params = authorized.json()["params"]
                connect = await service.post(
                    "/api/apple_connect",
                    data={"key": key, "code": params["code"], "id_token": params["id_token"]},
                )
                assert connect.status_code == 200, connect.text


def rows(data_dir: Path) -> dict[str, tuple[str, str | None]]:
    """``email → (sub, transfer_sub)`` straight from the SQLite file the CLI used."""
    with closing(sqlite3.connect(data_dir / "appleconnect.db")) as db:
        found = db.execute("SELECT email, sub, transfer_sub FROM users").fetchall()
    return {email: (sub, transfer_sub) for email, sub, transfer_sub in found}


def test_users_migrate_export_then_import_through_the_cli(
    tmp_path: Path,
    apple: tuple[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("APPLECONNECT_")]:
        monkeypatch.delenv(name)  # the command reads only --config here
    base_url, state = apple
    team_a = state.default_team
    team_b = state.create_team(team_id=TEAM_B, app_id="com.b.app", services_id="com.b.web")
    key = Fernet.generate_key().decode()
    data_dir = tmp_path / "data"
    config_a = write_config(
        tmp_path / "team-a.toml",
        base_url,
        key,
        {
            "team_id": team_a.team_id,
            "key_id": team_a.key_id,
            "private_key_pem": team_a.private_key_pem,
            "services_id": team_a.services_id,
            "app_id": team_a.app_id,
        },
    )
    config_b = write_config(tmp_path / "team-b.toml", base_url, key, team_b)
    asyncio.run(sign_in(data_dir, config_a, base_url, team_a.app_id))
    accounts = {email: state.find_account(email).id for email in ACCOUNTS}
    before = rows(data_dir)
    assert {email: before[email] for email in ACCOUNTS} == {
        email: (state.sub_for(account, team_a.team_id), None) for email, account in accounts.items()
    }
    capsys.readouterr()

    def migrate(*args: str) -> tuple[int, str, str]:
        code = main(["users", "migrate", *args, "--data-dir", str(data_dir)])
        out, err = capsys.readouterr()
        return code, out, err

    missing = migrate("export", "--config", str(config_a))
    assert missing[0] == 2
    assert "export needs --target-team-id" in missing[2]

    # The sending team: one transfer_sub per user, from Apple.
    code, out, err = migrate("export", "--target-team-id", TEAM_B, "--config", str(config_a))
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "export: 2 users migrated, 0 unchanged, 0 failed"
    exported = rows(data_dir)
    assert exported == {
        email: (before[email][0], state.transfer_sub_for(account, TEAM_B))
        for email, account in accounts.items()
    }

    # The app moves to team B (Apple's app transfer); then the recipient team swaps each
    # transfer_sub for team B's sub.
    state.transfer_app(app_id=team_a.app_id, to_team=TEAM_B)
    code, out, err = migrate("import", "--config", str(config_b))
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "import: 2 users migrated, 0 unchanged, 0 failed"
    imported = rows(data_dir)
    for email, account in accounts.items():
        assert imported[email][0] == state.sub_for(account, TEAM_B) != before[email][0]

    # A transfer_sub Apple does not know: reported on stderr, exit code 1.
    with closing(sqlite3.connect(data_dir / "appleconnect.db")) as db, db:
        db.execute(
            "UPDATE users SET transfer_sub = ? WHERE email = ?",
            ("000000.00000000000000000000000000000000.0000", ACCOUNTS[0]),
        )
    code, out, err = migrate("import", "--config", str(config_b))
    assert code == 1
    assert out.splitlines()[-1].endswith("1 failed")
    assert err.startswith("user ")
    assert "transfer_sub" in err
    assert rows(data_dir)[ACCOUNTS[1]] == imported[ACCOUNTS[1]]
