"""One list syntax for client ids: repeated and/or comma-separated, each element checked, and an
error that shows the accepted forms; no command takes ``a,b`` as one client id."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from appleconnect.checks import run_checks, split_list
from appleconnect.cli import main
from appletest import AUDIENCE, pem_of

TEAM, KID, WEB, APP = "ABCDE12345", "KEY1234567", "com.example.web", "com.example.app"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / f"AuthKey_{KID}.p8"
    path.write_bytes(pem_of(ec.generate_private_key(ec.SECP256R1())))
    return path


@pytest.fixture(autouse=True)
def no_appleconnect_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("APPLECONNECT_")]:
        monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_repeated_and_comma_separated_are_one_syntax() -> None:
    assert split_list(["a,b", "c"], what="x") == ("a", "b", "c")
    assert split_list("a, b ,c", what="x") == ("a", "b", "c")
    assert split_list(["a", "a,b"], what="x") == ("a", "b")  # a repeated id counts once
    assert split_list("", what="x") == ()  # APPLECONNECT_APP_IDS= is no App ID


@pytest.mark.parametrize(
    ("value", "fault"),
    [
        ("a,,b", "'a,,b' has an empty element"),
        ("a,", "'a,' has an empty element"),
        ("com.example web", "'com.example web' has a space or a control character inside"),
    ],
)
def test_a_bad_element_is_named_with_the_accepted_forms(value: str, fault: str) -> None:
    with pytest.raises(ValueError, match=r"^--client-id: ") as caught:
        split_list(value, what="--client-id", option="--client-id", variable="APPLECONNECT_APP_IDS")
    message = str(caught.value)
    assert fault in message
    assert "--client-id a --client-id b or --client-id a,b or APPLECONNECT_APP_IDS=a,b" in message


def test_doctor_checks_each_comma_separated_client_id(
    capsys: pytest.CaptureFixture[str], key_file: Path
) -> None:
    code, out, _ = run(
        capsys, "doctor", "--team-id", TEAM, "--key-id", KID, "--client-id", f"{WEB},{APP}",
        "--key-file", str(key_file),
    )  # fmt: skip
    assert code == 0, out
    assert f"PASS  client id {WEB} " in out
    assert f"PASS  client id {APP} " in out
    assert "," not in "".join(line for line in out.splitlines() if "client id" in line)


def test_doctor_refuses_a_bad_list_in_one_line(
    capsys: pytest.CaptureFixture[str], key_file: Path
) -> None:
    code, out, err = run(
        capsys, "doctor", "--team-id", TEAM, "--key-id", KID, "--client-id", f"{WEB},,{APP}",
        "--key-file", str(key_file),
    )  # fmt: skip
    assert code == 2
    assert out == ""
    assert err == (
        f"appleconnect: --client-id: '{WEB},,{APP}' has an empty element; give --client-id a "
        "--client-id b or --client-id a,b.\n"
    )


def test_doctor_reads_the_services_variables(
    capsys: pytest.CaptureFixture[str], key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLECONNECT_TEAM_ID", TEAM)
    monkeypatch.setenv("APPLECONNECT_KEY_ID", KID)
    monkeypatch.setenv("APPLECONNECT_CLIENT_ID", WEB)
    monkeypatch.setenv("APPLECONNECT_APP_IDS", f"{APP}, com.example.app2")
    monkeypatch.setenv("APPLECONNECT_PRIVATE_KEY_FILE", str(key_file))
    code, out, _ = run(capsys, "doctor")
    assert code == 0, out
    for client_id in (WEB, APP, "com.example.app2"):
        assert f"PASS  client id {client_id} " in out
    assert "PASS  private key" in out

    monkeypatch.setenv("APPLECONNECT_CLIENT_ID", f"{WEB},{APP}")
    code, out, err = run(capsys, "doctor")
    assert (code, out) == (2, "")
    assert err.startswith(f"appleconnect: APPLECONNECT_CLIENT_ID: '{WEB},{APP}' is not one")
    assert "APPLECONNECT_APP_IDS=a,b" in err


def test_the_library_check_fails_a_client_id_with_a_comma(key_file: Path) -> None:
    checks = run_checks(
        team_id=TEAM, key_id=KID, client_ids=[f"{WEB},{APP}"], key_path=str(key_file)
    )
    (check,) = [c for c in checks if c.name.startswith("client id")]
    assert check.label == "FAIL"
    assert "contains a comma" in check.detail
    (minted,) = [c for c in checks if c.name == "client secret"]
    assert minted.label == "FAIL"  # no secret is signed for it
    assert "contains a comma" in minted.detail


def test_secret_does_not_sign_a_sub_with_a_comma(
    capsys: pytest.CaptureFixture[str], key_file: Path
) -> None:
    code, out, err = run(
        capsys, "secret", "--team-id", TEAM, "--key-id", KID, "--client-id", f"{WEB},{APP}",
        "--key-file", str(key_file),
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith(f"appleconnect: --client-id: The client id '{WEB},{APP}' contains a")
    assert err.count("\n") == 1


def test_secret_names_the_variable_that_gave_a_bad_value(
    capsys: pytest.CaptureFixture[str], key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLECONNECT_TEAM_ID", "ABCDE1234")  # nine characters
    monkeypatch.setenv("APPLECONNECT_CLIENT_ID", WEB)
    code, out, err = run(capsys, "secret", "--key-id", KID, "--key-file", str(key_file))
    assert (code, out) == (2, "")
    assert err.startswith("appleconnect: APPLECONNECT_TEAM_ID: The Team ID must be the 10-char")
    monkeypatch.setenv("APPLECONNECT_TEAM_ID", TEAM)
    code, out, err = run(capsys, "secret", "--key-id", "KEY", "--key-file", str(key_file))
    assert err.startswith("appleconnect: --key-id: The Key ID must be the 10-character")
    code, out, _ = run(capsys, "secret", "--key-id", KID, "--key-file", str(key_file))
    assert code == 0
    assert out.count(".") == 2  # a JWT


@pytest.mark.parametrize(
    ("variable", "replacement"),
    [
        ("APPLECONNECT_KEY_FILE", "APPLECONNECT_PRIVATE_KEY_FILE"),
        ("APPLECONNECT_CLIENT_IDS", "APPLECONNECT_CLIENT_ID (the Services ID) and"),
    ],
)
def test_a_variable_of_older_versions_is_named(
    capsys: pytest.CaptureFixture[str],
    key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    replacement: str,
) -> None:
    monkeypatch.setenv(variable, "x")
    code, out, err = run(capsys, "doctor", "--demo", "--demo-dir", str(key_file.parent / "d"))
    assert (code, out) == (2, "")
    assert err.startswith(f"appleconnect: {variable} is no longer read: use {replacement}")


def test_verify_token_takes_a_comma_separated_audience_list(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    jwks: dict[str, Any],
    sign: Callable[..., str],
) -> None:
    import time

    from appletest import apple_claims

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    token = sign(apple_claims(int(time.time())))
    code, out, _ = run(
        capsys, "verify-token", token, "--client-id", f"com.other,{AUDIENCE}",
        "--jwks-file", str(path),
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["aud"] == AUDIENCE
    code, out, err = run(
        capsys, "verify-token", token, "--client-id", "com.other,", "--jwks-file", str(path)
    )
    assert (code, out) == (2, "")
    assert "'com.other,' has an empty element" in err
