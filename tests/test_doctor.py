"""Offline configuration checks: each names the cause of a future invalid_client."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from appleconnect import ClientSecret
from appleconnect._doctor import Check, run_checks
from appletest import pem_of

TEAM, KID, CLIENT = "ABCDE12345", "KEY1234567", "com.example.web"
NOW = 1_763_700_000.0


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / f"AuthKey_{KID}.p8"
    path.write_bytes(pem_of(ec.generate_private_key(ec.SECP256R1())))
    return path


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_good_configuration_passes(key_file: Path) -> None:
    checks = run_checks(
        team_id=TEAM,
        key_id=KID,
        client_ids=[CLIENT, "com.example.app"],
        key_path=str(key_file),
        redirect_uris=["https://example.com/auth/apple/callback"],
        now=NOW,
    )
    assert all(c.ok and not c.warning for c in checks), checks
    assert {c.name for c in checks} >= {"Team ID", "Key ID", "private key", "client secret"}


def test_key_file_named_for_another_key(tmp_path: Path, key_file: Path) -> None:
    other = tmp_path / "AuthKey_OTHERKEY99.p8"
    other.write_bytes(key_file.read_bytes())
    checks = by_name(
        run_checks(team_id=TEAM, key_id=KID, client_ids=[CLIENT], key_path=str(other), now=NOW)
    )
    assert not checks["key file name"].ok
    assert "usual cause of invalid_client" in checks["key file name"].detail


def test_bad_ids_and_missing_key(tmp_path: Path) -> None:
    checks = by_name(
        run_checks(
            team_id="short",
            key_id="KEY1234567",
            client_ids=[f"{TEAM}.com.example.web"],
            key_path=str(tmp_path / "missing.p8"),
            now=NOW,
        )
    )
    assert "10-character" in checks["Team ID"].detail
    assert not checks["private key"].ok
    assert "cannot read" in checks["private key"].detail


def test_wrong_curve_key(tmp_path: Path) -> None:
    path = tmp_path / "AuthKey_KEY1234567.p8"
    path.write_bytes(pem_of(ec.generate_private_key(ec.SECP384R1())))
    checks = by_name(
        run_checks(team_id=TEAM, key_id=KID, client_ids=[CLIENT], key_path=str(path), now=NOW)
    )
    assert not checks["private key"].ok
    assert "P-256" in checks["private key"].detail


def test_pasted_secret_checks(key_file: Path) -> None:
    key = key_file.read_bytes()
    good = ClientSecret(TEAM, KID, CLIENT, key, ttl=86_400 * 90, clock=lambda: NOW).token
    checks = by_name(
        run_checks(team_id=TEAM, key_id=KID, client_ids=[CLIENT], client_secret=good, now=NOW)
    )
    assert checks["pasted client secret"].ok
    assert "expires in 90 days" in checks["pasted client secret"].detail

    soon = by_name(
        run_checks(
            team_id=TEAM, key_id=KID, client_ids=[CLIENT], client_secret=good, now=NOW + 86_400 * 70
        )
    )["pasted client secret"]
    assert soon.ok
    assert soon.warning

    expired = by_name(
        run_checks(
            team_id=TEAM, key_id=KID, client_ids=[CLIENT], client_secret=good, now=NOW + 86_400 * 91
        )
    )["pasted client secret"]
    assert not expired.ok
    assert "expired" in expired.detail

    wrong_client = by_name(
        run_checks(team_id=TEAM, key_id=KID, client_ids=["com.other"], client_secret=good, now=NOW)
    )["pasted client secret"]
    assert "sub is 'com.example.web'" in wrong_client.detail


def test_pasted_secret_with_der_signature_and_wrong_key(key_file: Path, tmp_path: Path) -> None:
    import jwt

    other = ec.generate_private_key(ec.SECP256R1())
    claims = {"iss": TEAM, "iat": int(NOW), "exp": int(NOW) + 3600}
    claims |= {"aud": "https://appleid.apple.com", "sub": CLIENT}
    foreign = jwt.encode(claims, other, algorithm="ES256", headers={"kid": KID})
    checks = by_name(
        run_checks(
            team_id=TEAM,
            key_id=KID,
            client_ids=[CLIENT],
            key_path=str(key_file),
            client_secret=foreign,
            now=NOW,
        )
    )
    assert "does not verify with the private key" in checks["pasted client secret"].detail
    header, payload, _ = foreign.split(".")
    from cryptography.hazmat.primitives import hashes

    from appleconnect._jws import b64url_encode

    der = other.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    der_token = f"{header}.{payload}.{b64url_encode(der)}"
    checks = by_name(
        run_checks(team_id=TEAM, key_id=KID, client_ids=[CLIENT], client_secret=der_token, now=NOW)
    )
    assert "raw R||S" in checks["pasted client secret"].detail
    assert (
        "malformed"
        in by_name(
            run_checks(team_id=TEAM, key_id=KID, client_ids=[CLIENT], client_secret="x", now=NOW)
        )["pasted client secret"].detail
    )
