"""Apple's Private Email Relay in the emulator: real SMTP over loopback (smtplib against the
relay's aiosmtpd server), the sources through the control API, DKIM verified by dkimpy."""

from __future__ import annotations

import gc
import smtplib
import warnings
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from appleconnect.emulator import EmulatorState, start_relay_server
from appleconnect.emulator.relay import DAILY_LIMIT
from appleconnect.emulator.smtp import RelayServer

ACCOUNT = "maria.ruiz@example.com"


@pytest.fixture
def smtp_port(app: FastAPI) -> Iterator[int]:
    server = start_relay_server(app)
    yield server.port
    server.stop()


@pytest.fixture
async def relay_address(
    authorize: Callable[..., Any], client: httpx.AsyncClient, state: EmulatorState
) -> str:
    """The relay address of ``ACCOUNT`` for the default team (Hide My Email chosen)."""
    await authorize(share_email=False)
    account = state.find_account(ACCOUNT)
    assert account is not None
    return state.relay_email_for(account.id, state.default_team.team_id)


def message(sender: str, to: str, subject: str = "Welcome", body: str = "Hello!") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg.as_bytes()


def send(port: int, mail_from: str, to: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail(mail_from, [to], data)


async def add_source(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/emulator/email-sources", json=body)


async def mailbox(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/emulator/mailbox", params={"account": ACCOUNT})
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


async def test_registered_domain_delivers_to_the_real_address(
    client: httpx.AsyncClient, smtp_port: int, relay_address: str
) -> None:
    assert (await add_source(client, domain="mail.example.com")).status_code == 201
    send(
        smtp_port,
        "bounces@mail.example.com",
        relay_address,
        message("Example <hello@mail.example.com>", relay_address, "Welcome <b>"),
    )
    [got] = await mailbox(client)
    assert got["to"] == ACCOUNT
    assert got["relay_address"] == relay_address
    assert got["from"] == "Example <hello@mail.example.com>"
    assert got["subject"] == "Welcome <b>"
    assert got["body"].strip() == "Hello!"
    assert isinstance(got["received_at"], float)
    [entry] = (await client.get("/emulator/relay-log")).json()
    assert (entry["outcome"], entry["smtp_reply"]) == ("delivered", "250 OK")
    page = await client.get("/emulator/mailbox/page", params={"account": ACCOUNT})
    assert "Welcome &lt;b&gt;" in page.text
    assert "Welcome <b>" not in page.text


async def test_registered_individual_address_is_a_source(
    client: httpx.AsyncClient, smtp_port: int, relay_address: str
) -> None:
    assert (await add_source(client, email="hello@example.org")).status_code == 201
    send(smtp_port, "hello@example.org", relay_address, message("hello@example.org", relay_address))
    assert len(await mailbox(client)) == 1
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(
            smtp_port,
            "other@example.org",
            relay_address,
            message("other@example.org", relay_address),
        )
    assert refused.value.smtp_code == 550


async def test_unregistered_source_gets_550_and_nothing_is_delivered(
    client: httpx.AsyncClient, smtp_port: int, relay_address: str
) -> None:
    await add_source(client, domain="example.com")
    # A subdomain is not the registered domain: the match is exact.
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(
            smtp_port,
            "bounces@mail.example.com",
            relay_address,
            message("hello@mail.example.com", relay_address),
        )
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error == b"5.1.1 bad mailbox name"
    assert await mailbox(client) == []
    [entry] = (await client.get("/emulator/relay-log")).json()
    assert entry["outcome"] == "refused"
    assert "'mail.example.com'" in entry["reason"]


async def test_unknown_relay_address_is_refused_at_rcpt(
    client: httpx.AsyncClient, smtp_port: int, relay_address: str
) -> None:
    await add_source(client, domain="example.com")
    unknown = "zzzzzzzzzz@privaterelay.appleid.com"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(smtp_port, "a@example.com", unknown, message("a@example.com", unknown))
    assert refused.value.recipients[unknown] == (550, b"5.1.1 bad mailbox name")
    [entry] = (await client.get("/emulator/relay-log")).json()
    assert entry["reason"] == "unknown relay address"


async def test_forwarding_off_accepts_and_drops(
    client: httpx.AsyncClient, smtp_port: int, relay_address: str
) -> None:
    await add_source(client, domain="example.com")
    off = await client.post(
        f"/emulator/accounts/{ACCOUNT}/email-forwarding", json={"enabled": False, "wait": True}
    )
    assert off.status_code == 200
    send(smtp_port, "a@example.com", relay_address, message("a@example.com", relay_address))
    assert await mailbox(client) == []
    [entry] = (await client.get("/emulator/relay-log")).json()
    assert entry["outcome"] == "dropped"
    assert "forwarding off" in entry["reason"]


async def test_revoked_consent_makes_the_address_unknown(
    client: httpx.AsyncClient, smtp_port: int, relay_address: str
) -> None:
    await add_source(client, domain="example.com")
    await client.post(f"/emulator/accounts/{ACCOUNT}/revoke-consent", json={"wait": True})
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(smtp_port, "a@example.com", relay_address, message("a@example.com", relay_address))


def _rsa_pair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def _signed(data: bytes, domain: str, private: bytes, selector: str = "s1") -> bytes:
    signature = dkim.sign(
        data,
        selector.encode(),
        domain.encode(),
        private,
        include_headers=[b"from", b"to", b"subject"],
    )
    return bytes(signature) + data


async def test_dkim_path_delivers_only_a_verified_matching_signature(
    client: httpx.AsyncClient, smtp_port: int, relay_address: str
) -> None:
    private, public = _rsa_pair()
    other_private, other_public = _rsa_pair()
    created = await add_source(
        client, domain="example.com", dkim_selector="s1", dkim_public_key=public
    )
    assert created.status_code == 201
    await add_source(
        client, domain="other.example", dkim_selector="s1", dkim_public_key=other_public
    )
    provider = "bounce-123@provider.test"  # the email provider's envelope domain
    plain = message("hello@example.com", relay_address)

    cases = {
        "unsigned": plain,
        "wrong key": _signed(plain, "example.com", other_private),
        "unknown selector": _signed(plain, "example.com", private, selector="s2"),
        "d= another registered domain": _signed(plain, "other.example", other_private),
        "tampered": _signed(plain, "example.com", private).replace(b"Welcome", b"Welcame"),
    }
    for name, data in cases.items():
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(smtp_port, provider, relay_address, data)
        assert refused.value.smtp_code == 550, name
    assert await mailbox(client) == []
    reasons = [e["reason"] for e in (await client.get("/emulator/relay-log")).json()]
    assert "no DKIM signature verifies" in reasons[0]
    assert "d=other.example does not match the From domain 'example.com'" in reasons[3]

    send(smtp_port, provider, relay_address, _signed(plain, "example.com", private))
    [got] = await mailbox(client)
    assert got["from"] == "hello@example.com"


async def test_the_101st_message_of_a_day_is_refused(
    client: httpx.AsyncClient, smtp_port: int, relay_address: str
) -> None:
    await add_source(client, domain="example.com")
    data = message("a@example.com", relay_address)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        for _ in range(DAILY_LIMIT):
            smtp.sendmail("a@example.com", [relay_address], data)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("a@example.com", [relay_address], data)
    assert refused.value.recipients[relay_address][0] == 452
    assert len(await mailbox(client)) == DAILY_LIMIT
    # The next day (the emulator's clock a day on) the address takes mail again.
    moved = await client.post("/emulator/clock/advance", json={"seconds": 86400})
    assert moved.status_code == 200, moved.text
    send(smtp_port, "a@example.com", relay_address, data)
    assert len(await mailbox(client)) == DAILY_LIMIT + 1


async def test_sources_limits_and_validation(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/emulator/email-sources")).json()
    assert (listed["membership"], listed["limit"], listed["sources"]) == ("organization", 100, [])
    member = await client.put(
        "/emulator/email-sources/membership", json={"membership": "individual"}
    )
    assert member.json()["limit"] == 32
    for i in range(32):
        assert (await add_source(client, domain=f"d{i}.example.com")).status_code == 201
    full = await add_source(client, email="one@example.com")
    assert full.status_code == 409
    assert "32 email sources" in full.json()["detail"]
    # Registering a source again replaces it and does not count twice.
    assert (await add_source(client, domain="d0.example.com")).status_code == 200
    assert (
        await client.put("/emulator/email-sources/membership", json={"membership": "organization"})
    ).status_code == 200
    assert (await add_source(client, email="one@example.com")).status_code == 201

    for bad in (
        {"domain": "localhost"},
        {"domain": "a..b"},
        {"email": "no-at-sign"},
        {"domain": "x.com", "email": "a@x.com"},
        {},
        {"domain": "x.com", "dkim_selector": "s1"},
        {"domain": "x.com", "dkim_selector": "s1", "dkim_public_key": "not a pem"},
        {"domain": "x.com", "team_id": "NOSUCHTEAM"},
    ):
        refused = await add_source(client, **bad)
        assert refused.status_code in (400, 404), bad
    removed = await client.request(
        "DELETE", "/emulator/email-sources", json={"email": "one@example.com"}
    )
    assert removed.status_code == 204
    again = await client.request(
        "DELETE", "/emulator/email-sources", json={"email": "one@example.com"}
    )
    assert again.status_code == 404
    sources = (await client.get("/emulator/email-sources")).json()["sources"]
    assert len(sources) == 32


async def test_relay_info_says_where_smtp_listens(
    client: httpx.AsyncClient, smtp_port: int
) -> None:
    info = (await client.get("/emulator/relay")).json()
    assert (info["smtp_host"], info["smtp_port"], info["daily_limit"]) == (
        "127.0.0.1",
        smtp_port,
        100,
    )


def test_a_relay_server_built_but_never_started_leaves_nothing_open(app: FastAPI) -> None:
    # The sandbox builds its relay server with the app and starts it in the lifespan; an app
    # that is built and never run must not leak an event loop (and its socket pair), which
    # surfaced as a ResourceWarning in whichever test happened to collect it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = RelayServer(app.state.relay)
        server.stop()  # harmless before start
        del server
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
