"""``appleconnect serve`` in sandbox mode follows the emulator's rule for its control API: on a
network address (``--host 0.0.0.0``) it is off unless ``--control-api`` asks for it, and the
banner says which. The app is composed for that host and called in-process: nothing listens on
or sends to a non-loopback address."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from appleconnect.cli import cli
from appleconnect.emulator import control_api_enabled
from appleconnect.sandbox import compose


def _answers(app: object, paths: tuple[str, ...]) -> list[int]:
    async def run() -> list[int]:
        assert hasattr(app, "router")
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                return [(await c.get(path)).status_code for path in paths]

    return asyncio.run(run())


PATHS = (
    "/apple/emulator/credentials",
    "/apple/emulator/accounts",
    "/apple/emulator/clock",
    "/apple/emulator/faults",
    "/apple/auth/keys",
    "/",
)


def _banner_line(banner: list[str]) -> str:
    return next(line for line in banner if "emulated Apple" in line)


def test_on_a_network_address_the_control_api_is_off_by_default(tmp_path: Path) -> None:
    composed = compose(host="0.0.0.0", port=8000, data_dir=tmp_path, config=None, environ={})
    assert composed.sandbox
    # The control API is gone; Apple's endpoints and the demo page still answer.
    assert _answers(composed.app, PATHS) == [404, 404, 404, 404, 200, 200]
    assert "control API: off, --control-api turns it on" in _banner_line(composed.banner)


def test_control_api_flag_turns_it_on_on_a_network_address(tmp_path: Path) -> None:
    composed = compose(
        host="0.0.0.0",
        port=8000,
        data_dir=tmp_path,
        config=None,
        control_api=True,
        environ={},
    )
    assert _answers(composed.app, PATHS) == [200, 200, 200, 200, 200, 200]
    line = _banner_line(composed.banner)
    assert "control API: http://127.0.0.1:8000/apple/emulator/" in line


def test_on_loopback_the_sandbox_demo_keeps_its_control_api(tmp_path: Path) -> None:
    composed = compose(host="127.0.0.1", port=8000, data_dir=tmp_path, config=None, environ={})
    assert _answers(composed.app, PATHS[:1]) == [200]
    off = compose(
        host="127.0.0.1",
        port=8000,
        data_dir=tmp_path / "b",
        config=None,
        control_api=False,
        environ={},
    )
    assert _answers(off.app, PATHS[:1]) == [404]


def test_one_rule_for_standalone_and_sandbox() -> None:
    assert control_api_enabled("127.0.0.1", None) is True
    assert control_api_enabled("::1", None) is True
    assert control_api_enabled("localhost", None) is True
    assert control_api_enabled("0.0.0.0", None) is False
    assert control_api_enabled("192.0.2.10", None) is False
    assert control_api_enabled("192.0.2.10", True) is True
    assert control_api_enabled("127.0.0.1", False) is False


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ({"control_api": True}, "--control-api applies to sandbox mode only"),
        ({"rate_limits": False}, "--no-rate-limits applies to sandbox mode only"),
    ],
)
def test_sandbox_flags_are_refused_outside_sandbox_mode(
    tmp_path: Path, flag: dict[str, bool], message: str
) -> None:
    with pytest.raises(click.UsageError, match=message):
        compose(
            host="127.0.0.1",
            port=8000,
            data_dir=tmp_path,
            config=None,
            environ={"APPLECONNECT_PUBLIC_URL": "https://id.example.com"},
            **flag,
        )


@pytest.mark.parametrize("command", ["serve", "emulator"])
def test_help_says_what_the_control_api_exposes(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    text = " ".join(result.output.split())
    assert "--control-api / --no-control-api" in text
    assert "credentials with its private key, the test accounts, the clock and fault" in text
    assert "off on any other" in text


def _service_settings(composed: object) -> object:
    """The settings the composed sandbox's service starts with."""
    mount = composed.app.routes[-1]  # type: ignore[attr-defined]
    return mount.app.state.live_settings.base


def test_no_rate_limits_turns_the_sandbox_limits_off(tmp_path: Path) -> None:
    on = compose(host="127.0.0.1", port=8000, data_dir=tmp_path / "on", config=None, environ={})
    off = compose(
        host="127.0.0.1",
        port=8000,
        data_dir=tmp_path / "off",
        config=None,
        environ={},
        rate_limits=False,
    )
    limits = [
        (s.rate_limit_per_ip, s.rate_limit_per_key)  # type: ignore[attr-defined]
        for s in map(_service_settings, (on, off))
    ]
    assert limits == [(300, 3000), (0, 0)]


def test_serve_help_shows_the_rate_limit_flag() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    text = " ".join(result.output.split())
    assert "--rate-limits / --no-rate-limits" in text
    assert "appleconnect serve --no-rate-limits" in text
