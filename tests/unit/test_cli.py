"""The command line's options that set Settings: help and defaults from the fields themselves."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from captioner.cli import SettingOption, cli, serve
from captioner.config import Settings, setting_default_text

SETTING_OPTIONS = [p for p in serve.params if isinstance(p, SettingOption)]


def test_serve_sets_settings_through_its_options() -> None:
    names = {option.name for option in SETTING_OPTIONS}
    assert {"port", "max_batch_size", "max_queue_size", "log_level"} <= names
    assert names <= set(Settings.model_fields)


def test_serve_help_shows_each_fields_description_and_default() -> None:
    context = click.Context(serve, info_name="serve")
    for option in SETTING_OPTIONS:
        assert option.name is not None
        record = option.get_help_record(context)
        assert record is not None
        field = Settings.model_fields[option.name]
        assert record[1].startswith(str(field.description)), option.name
        assert record[1].endswith(f"[default: {setting_default_text(option.name)}]"), option.name
    shown = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=400).output
    assert "[default: 5000]" in shown and "[default: 8]" in shown


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``serve`` would start, without starting it."""
    captured: dict[str, Any] = {}
    monkeypatch.setattr("captioner.api.server.open_listener", lambda host, port: None)
    monkeypatch.setattr("captioner.tf_runtime.import_tensorflow", lambda level: None)
    monkeypatch.setattr(
        "captioner.api.server.serve", lambda settings, listener: captured.update(settings=settings)
    )
    return captured


def test_an_unset_option_leaves_the_environment_in_place(
    monkeypatch: pytest.MonkeyPatch, started: dict[str, Any]
) -> None:
    monkeypatch.setenv("CAPTIONER_PORT", "6001")
    monkeypatch.setenv("CAPTIONER_MAX_BATCH_SIZE", "3")
    assert CliRunner().invoke(cli, ["serve", "--model", "demo"]).exit_code == 0
    assert (started["settings"].port, started["settings"].max_batch_size) == (6001, 3)
    assert CliRunner().invoke(cli, ["serve", "--port", "7002"]).exit_code == 0
    assert (started["settings"].port, started["settings"].max_batch_size) == (7002, 3)


def test_every_command_has_help() -> None:
    for name, command in cli.commands.items():
        assert isinstance(command, click.Command)
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert command.help, name


@pytest.mark.parametrize(
    "args", [["caption", "x.jpg"], ["evaluate", "--data", __file__]], ids=["caption", "evaluate"]
)
def test_a_max_length_with_no_room_for_a_word_is_a_usage_error(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--max-length", "2"])
    assert result.exit_code == 2
    assert "Invalid value for '--max-length': 2 is not in the range 3<=x<=100." in result.output
