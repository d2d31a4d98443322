"""The documentation site builds strictly, and its generated pages carry what the code says."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from captioner.cli import cli
from captioner.config import Settings, setting_variables

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return out


def text_of(page: Path, tag: str = " ") -> str:
    """The page's text: markup replaced by ``tag``, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", tag, page.read_text()))


def test_the_cli_reference_is_every_commands_own_help(site: Path) -> None:
    reference = " ".join(text_of(site / "cli" / "index.html").split())
    for name in cli.commands:
        assert f"Usage: captioner {name} [OPTIONS]" in reference, name
    for placeholder in ("N/A", "Sentinel", "UNSET"):
        assert placeholder not in reference
    assert "[default: 5000]" in reference  # serve's defaults come from Settings
    assert "counting the start and end tokens <S> and </S>" in reference


def test_the_settings_table_lists_every_setting(site: Path) -> None:
    table = text_of(site / "settings" / "index.html", tag="")
    for name, field in Settings.model_fields.items():
        assert setting_variables(name)[0] in table, name
        assert " ".join(str(field.description).replace("`", "").split()[:4]) in " ".join(
            table.split()
        ), name
