"""How the mode is chosen (one rule, and ``serve`` says what chose it), the service's list
settings in the one list syntax, and ``serve`` refusing a port in use before its banner."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from appleconnect.cli import main
from appleconnect.sandbox import build_sandbox_app, compose
from appleconnect.server.commands import CommandError
from appleconnect.server.settings import ModeChoice, SettingsError, choose_mode, load_settings


@pytest.fixture(autouse=True)
def no_appleconnect_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("APPLECONNECT_")]:
        monkeypatch.delenv(name)


def production_file(tmp_path: Path, *lines: str) -> Path:
    config = tmp_path / "prod.toml"
    config.write_text(
        'public_url = "https://login.example.com"\n'
        f'encryption_key = "{Fernet.generate_key().decode()}"\n' + "".join(f"{x}\n" for x in lines)
    )
    return config


def test_the_rule_first_match_wins(tmp_path: Path) -> None:
    plain = production_file(tmp_path)
    sandboxed = tmp_path / "sandbox.toml"
    sandboxed.write_text('mode = "sandbox"\n')
    team, mode = {"APPLECONNECT_TEAM_ID": "ABCDE12345"}, "APPLECONNECT_MODE"
    cases = [
        (None, {}, ModeChoice("sandbox")),
        (None, {"APPLECONNECT_LOG_FORMAT": "json"}, ModeChoice("sandbox")),
        (None, {"APPLECONNECT_RATE_LIMIT_PER_IP": "0"}, ModeChoice("sandbox")),
        (None, team, ModeChoice("production", "APPLECONNECT_TEAM_ID")),
        (
            None,
            {"APPLECONNECT_PUBLIC_URL": "https://a.example", "APPLECONNECT_DATABASE_URL": "x"},
            ModeChoice("production", "APPLECONNECT_DATABASE_URL"),
        ),
        (plain, {}, ModeChoice("production", f"config file {plain}")),
        (sandboxed, {}, ModeChoice("sandbox", f"mode in {sandboxed}")),
        (sandboxed, {mode: "production"}, ModeChoice("production", mode)),
        (None, {mode: "sandbox", **team}, ModeChoice("sandbox", mode)),
    ]  # fmt: skip
    for config, environ, expected in cases:
        assert choose_mode(config=config, environ=environ) == expected, (config, environ)
        settings = load_settings(data_dir=tmp_path, config=config, environ=environ)
        assert settings.mode == expected.mode
    assert str(ModeChoice("sandbox")) == "sandbox mode (default: no configuration)"
    assert str(ModeChoice("production", "APPLECONNECT_MODE")) == (
        "production mode (chosen by APPLECONNECT_MODE)"
    )


def test_a_bad_mode_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(
        SettingsError, match=r"^APPLECONNECT_MODE: must be 'sandbox' or 'production'"
    ):
        choose_mode(config=None, environ={"APPLECONNECT_MODE": "prod"})
    config = tmp_path / "c.toml"
    config.write_text('mode = "live"\n')
    with pytest.raises(
        SettingsError, match=r"^mode: must be 'sandbox' or 'production', not 'live'"
    ):
        load_settings(config=config, environ={})


def test_serve_says_which_setting_chose_the_mode(tmp_path: Path) -> None:
    sandbox = compose(host="127.0.0.1", port=8000, data_dir=tmp_path / "s", config=None, environ={})
    assert sandbox.sandbox
    assert "  mode             sandbox (default: no configuration: no --config, no " in (
        "\n".join(sandbox.banner)
    )
    config = production_file(tmp_path)
    production = compose(
        host="127.0.0.1", port=8000, data_dir=tmp_path / "p", config=config, environ={}
    )
    assert not production.sandbox
    assert production.banner[0] == (
        f"Apple Connect (production mode, chosen by config file {config}) on "
        "https://login.example.com"
    )


def test_a_tool_variable_is_named_when_it_chooses_production(tmp_path: Path) -> None:
    # Exported for `appleconnect secret`, it configures a deployment: serve says so, by name.
    with pytest.raises(CommandError) as caught:
        compose(
            host="127.0.0.1",
            port=8000,
            data_dir=tmp_path,
            config=None,
            environ={"APPLECONNECT_TEAM_ID": "ABCDE12345"},
        )
    message = caught.value.format_message()
    assert message.startswith("configuration error: encryption_key: production mode needs a key")
    assert message.endswith(
        "(production mode, chosen by APPLECONNECT_TEAM_ID; without it and without --config, "
        "serve runs the sandbox)"
    )


def test_the_sandbox_takes_the_settings_it_does_not_set_itself(tmp_path: Path) -> None:
    composed = compose(
        host="127.0.0.1",
        port=8000,
        data_dir=tmp_path,
        config=None,
        environ={"APPLECONNECT_RATE_LIMIT_PER_IP": "7", "APPLECONNECT_LOG_FORMAT": "json"},
    )
    assert composed.sandbox
    assert composed.log_format == "json"
    sandbox = build_sandbox_app(
        tmp_path / "b",
        relay_smtp=False,
        environ={"APPLECONNECT_RATE_LIMIT_PER_IP": "7", "APPLECONNECT_TEAM_ID": "ABCDE12345"},
    )
    assert sandbox.settings.rate_limit_per_ip == 7
    assert sandbox.settings.team_id != "ABCDE12345"  # the emulator's team plays Apple


@pytest.mark.parametrize(
    ("variable", "replacement"),
    [
        ("APPLECONNECT_KEY_FILE", "use APPLECONNECT_PRIVATE_KEY_FILE"),
        ("APPLECONNECT_CLIENT_IDS", "use APPLECONNECT_CLIENT_ID (the Services ID) and"),
    ],
)
def test_a_variable_of_older_tool_versions_is_named_by_serve(
    tmp_path: Path, variable: str, replacement: str
) -> None:
    with pytest.raises(CommandError) as caught:
        compose(
            host="127.0.0.1", port=8000, data_dir=tmp_path, config=None, environ={variable: "x"}
        )
    message = caught.value.format_message()
    assert message.startswith(f"configuration error: {variable}: unknown setting; {replacement}")


def test_list_settings_use_the_one_list_syntax(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'mode = "sandbox"\napp_ids = ["com.example.a,com.example.b", "com.example.c"]\n'
    )
    settings = load_settings(config=config, environ={})
    assert settings.app_ids == ("com.example.a", "com.example.b", "com.example.c")
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"APPLECONNECT_MODE": "sandbox", "APPLECONNECT_APP_IDS": "a,,b"})
    assert str(caught.value) == (
        "app_ids: 'a,,b' has an empty element; give APPLECONNECT_APP_IDS=a,b or "
        'app_ids = ["a", "b"] in the config file (set by APPLECONNECT_APP_IDS).'
    )
    with pytest.raises(SettingsError, match=r"'com\.example a' has a space or a control"):
        load_settings(
            environ={"APPLECONNECT_MODE": "sandbox", "APPLECONNECT_APP_IDS": "com.example a"}
        )
    both = load_settings(environ={"APPLECONNECT_MODE": "sandbox", "APPLECONNECT_CLIENT_ID": "a,b"})
    with pytest.raises(
        SettingsError, match=r"^client_id: 'a,b' is not one Services ID; put the App"
    ):
        both.validate(apple=False)


@pytest.fixture
def taken_port() -> tuple[socket.socket, int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield listener, listener.getsockname()[1]
    listener.close()


def test_serve_refuses_a_port_in_use_before_the_banner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], taken_port: tuple[socket.socket, int]
) -> None:
    _listener, port = taken_port
    data = tmp_path / "data"
    code = main(["serve", "--port", str(port), "--data-dir", str(data)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""  # no banner, no admin login link
    assert err == f"appleconnect: port {port} on 127.0.0.1 is in use; pass --port\n"
    assert not data.exists()  # nothing was prepared


def test_production_builds_the_app_only_when_it_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `serve --workers N`: the parent prints the banner and supervises; its workers build
    # their own apps, so the parent must not build one it would throw away.
    import appleconnect.sandbox as sandbox_module

    built: list[object] = []
    real = sandbox_module.create_app
    monkeypatch.setattr(sandbox_module, "create_app", lambda s: built.append(s) or real(s))
    production = compose(
        host="127.0.0.1", port=8000, data_dir=tmp_path, config=production_file(tmp_path), environ={}
    )
    assert production.banner
    assert built == []
    assert production.app is production.app
    assert len(built) == 1
