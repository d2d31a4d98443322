"""The committed reference pages (settings, command line) are what the code says now, and the
check catches a page left behind by a change to the code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import reference  # noqa: E402


def test_the_committed_reference_pages_match_the_code() -> None:
    assert reference.check() == []


@pytest.fixture
def pages_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The reference pages copied to a temporary folder the script reads and writes instead."""
    copies = {name: Path(shutil.copy(path, tmp_path)) for name, path in reference.PAGES.items()}
    monkeypatch.setattr(reference, "PAGES", copies)
    monkeypatch.setattr(reference, "REPO", tmp_path)
    return copies


def test_a_changed_option_help_makes_the_page_out_of_date(
    pages_copy: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from captioner.cli import cli

    option = next(p for p in cli.commands["download"].params if p.name == "force")
    monkeypatch.setattr(option, "help", "Replace whatever is there, always.")

    assert reference.check() == ["cli.md: out of date; run python scripts/reference.py"]
    pages_copy["cli"].write_text(reference.render(pages_copy["cli"].read_text()))
    assert "Replace whatever is there, always." in pages_copy["cli"].read_text()
    assert reference.check() == []


def test_a_page_without_its_block_is_reported(pages_copy: dict[str, Path]) -> None:
    pages_copy["settings"].write_text("# Settings\n\nSee the code.\n")
    assert reference.check() == ["settings.md: no <!-- reference: settings --> block"]


def test_the_pages_hold_every_setting_and_every_commands_help() -> None:
    from captioner.cli import cli
    from captioner.config import Settings, setting_variables

    settings = reference.PAGES["settings"].read_text()
    for name in Settings.model_fields:
        assert f"| `{setting_variables(name)[0]}`" in settings, name
    commands = reference.PAGES["cli"].read_text()
    for name in cli.commands:
        assert f"Usage: captioner {name} [OPTIONS]" in commands, name


def test_the_page_shows_what_help_prints() -> None:
    """The page is what ``captioner COMMAND --help`` prints, its context settings included.

    Each in a fresh process: click keeps a command's help option once made, so in this one
    the first rendering (the page's own) would decide what the second shows."""
    from captioner.cli import cli

    commands = reference.PAGES["cli"].read_text()
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom captioner.cli import cli\n"
        "run = CliRunner().invoke(cli, [sys.argv[1], '--help'], "
        f"terminal_width={reference.HELP_WIDTH}, prog_name='captioner')\n"
        "print(run.output, end='')\nsys.exit(run.exit_code)\n"
    )
    for name in cli.commands:
        printed = subprocess.run(
            [sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120
        )
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.strip() in commands, name
