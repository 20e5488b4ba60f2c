"""The command line: secret, verify-token, doctor."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from appleconnect.cli import main
from appletest import AUDIENCE, pem_of

TEAM, KID, CLIENT = "ABCDE12345", "KEY1234567", "com.example.web"


@pytest.fixture
def key(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / f"AuthKey_{KID}.p8"
    path.write_bytes(pem_of(private))
    return private, path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_secret_prints_a_verifiable_es256_jwt(
    capsys: pytest.CaptureFixture[str], key: tuple[Any, Path]
) -> None:
    private, path = key
    code, out, _ = run(
        capsys, "secret", "--team-id", TEAM, "--key-id", KID, "--client-id", CLIENT,
        "--key-file", str(path), "--ttl", "3600",
    )  # fmt: skip
    assert code == 0
    claims = jwt.decode(
        out.strip(),
        private.public_key(),
        algorithms=["ES256"],
        audience="https://appleid.apple.com",
    )
    assert claims["iss"] == TEAM
    assert claims["sub"] == CLIENT
    assert claims["exp"] - claims["iat"] == 3600 + 5


def test_secret_reports_a_bad_team_id_in_one_line(
    capsys: pytest.CaptureFixture[str], key: tuple[Any, Path]
) -> None:
    code, out, err = run(
        capsys, "secret", "--team-id", "ABC", "--key-id", KID, "--client-id", CLIENT,
        "--key-file", str(key[1]),
    )  # fmt: skip
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "Team ID must be the 10-character" in err


def test_verify_token_with_a_jwks_file(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    jwks: dict[str, Any],
    sign: Callable[..., str],
) -> None:
    import time

    from appletest import apple_claims

    now = int(time.time())
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    token = sign(apple_claims(now, nonce="n1"))
    code, out, _ = run(
        capsys, "verify-token", token, "--client-id", AUDIENCE, "--nonce", "n1",
        "--jwks-file", str(path),
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["nonce"] == "n1"

    code, out, err = run(
        capsys, "verify-token", token, "--client-id", "com.other", "--jwks-file", str(path)
    )
    assert code == 1
    assert out == ""
    assert err.startswith("appleconnect: invalid identity token: aud:")
    assert err.count("\n") == 1


def test_doctor_demo_passes_and_doctor_reports_failures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: tuple[Any, Path]
) -> None:
    code, out, _ = run(capsys, "doctor", "--demo", "--demo-dir", str(tmp_path / "demo"))
    assert code == 0
    assert "PASS  client secret" in out
    assert (tmp_path / "demo" / "AuthKey_DEMOKEY001.p8").exists()
    assert out.strip().splitlines()[-1] == "doctor: 7 of 7 checks passed"

    code, out, _ = run(
        capsys, "doctor", "--team-id", TEAM, "--key-id", KID, "--client-id", CLIENT,
        "--key-file", str(key[1]), "--redirect-uri", "http://localhost/cb",
    )  # fmt: skip
    assert code == 1
    assert "FAIL  redirect URI http://localhost/cb" in out
    assert "Apple requires HTTPS" in out


def test_every_command_is_registered_and_documented(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in (
        "secret",
        "verify-token",
        "doctor",
        "emulator",
        "emulator-email-sources",
        "serve",
        "migrate",
        "apikey",
        "users",
        "admin",
    ):
        assert f"  {command} " in out, command
