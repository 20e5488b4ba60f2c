"""``appleconnect emulator --smtp-port`` in a process of its own, and ``appleconnect
emulator-email-sources`` against it: the banner and credentials.json name the SMTP port, a source
added from the command line lets mail through; SIGTERM ends it with exit status 0, and a port
in use is refused before the banner."""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from appleconnect.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _banner_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "email relay SMTP:" in line:
            return int(line.rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    raise AssertionError("the banner has no email relay SMTP line")


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def test_smtp_port_banner_credentials_and_sources_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from appleconnect.cli import main; raise SystemExit(main())",
         "emulator", "--port", str(port), "--smtp-port", "0", "--state-dir", str(tmp_path / "s")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        smtp_port = _banner_port(proc)
        _wait_for(f"{url}/emulator/clock")
        credentials = json.loads((tmp_path / "s" / "credentials.json").read_text())
        assert (credentials["smtp_host"], credentials["smtp_port"]) == ("127.0.0.1", smtp_port)

        assert main(["emulator-email-sources", "add", "--url", url, "--domain", "example.com"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [s["domain"] for s in listed["sources"]] == ["example.com"]
        assert listed["limit"] == 100

        signed_in = httpx.post(
            f"{url}/emulator/authorize",
            json={
                "client_id": credentials["services_id"],
                "redirect_uri": credentials["redirect_uris"][0],
                "response_type": "code",
                "scope": "email",
                "account": "li.wei@example.com",
                "share_email": False,
            },
        )
        assert signed_in.status_code == 200, signed_in.text
        log_before = httpx.get(f"{url}/emulator/relay-log").json()
        assert log_before == []

        message = EmailMessage()
        message["From"] = "hello@example.com"
        message["Subject"] = "Hi"
        message.set_content("Hello")
        address = _relay_address(url)
        message["To"] = address
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.send_message(message)
        box = httpx.get(f"{url}/emulator/mailbox", params={"account": "li.wei@example.com"})
        assert [m["subject"] for m in box.json()] == ["Hi"]

        assert main(["emulator-email-sources", "remove", "--url", url, "--domain",
                     "example.com"]) == 0  # fmt: skip
        assert json.loads(capsys.readouterr().out)["sources"] == []
        assert main(["emulator-email-sources", "remove", "--url", url, "--domain",
                     "example.com"]) == 1  # fmt: skip
        assert "No such email source" in capsys.readouterr().err

        proc.terminate()  # SIGTERM: a graceful shutdown, not death by the signal (143)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _relay_address(url: str) -> str:
    # The relay address li.wei's id_token carries: the one the emulator issued for the team.
    log = httpx.get(f"{url}/emulator/accounts/li.wei@example.com").json()
    for consent in log["consents"]:
        if consent.get("email", "").endswith("@privaterelay.appleid.com"):
            return str(consent["email"])
    raise AssertionError(f"no relay address in {log['consents']}")


def test_a_port_in_use_is_refused_before_the_banner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["emulator", "--port", str(port), "--state-dir", str(tmp_path / "s")])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err == f"appleconnect: port {port} on 127.0.0.1 is in use; pass --port\n"
    assert not (tmp_path / "s").exists()
