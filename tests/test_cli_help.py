"""Every command's ``--help`` shows an example, and every option says what it is for."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from appleconnect.cli import cli


def walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))
        else:
            yield (*path, name)


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


PATHS = list(walk(cli))


def test_the_walk_reaches_every_command() -> None:
    names = {" ".join(p) for p in PATHS}
    for expected in ("secret", "doctor", "verify-token", "serve", "apikey create", "users show"):
        assert expected in names
    assert "admin login-link" in names
    assert len(PATHS) >= 20


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "appleconnect")
def test_help_has_an_example_and_every_option_a_description(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "\n  Example:\n    appleconnect " in result.output, result.output
    command = command_at(path)
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
            assert param.help.strip() in " ".join(result.output.split()) or param.opts[0] in (
                result.output
            )


def test_the_options_that_had_no_description() -> None:
    runner = CliRunner()
    doctor = " ".join(runner.invoke(cli, ["doctor", "--help"]).output.split())
    assert "--team-id TEXT The 10-character Team ID to check" in doctor
    assert "--key-id TEXT The 10-character Key ID of the Sign in with Apple key" in doctor
    verify = " ".join(runner.invoke(cli, ["verify-token", "--help"]).output.split())
    assert "--leeway INTEGER RANGE Seconds of clock skew allowed" in verify
