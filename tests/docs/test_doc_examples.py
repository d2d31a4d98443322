"""The shell examples of the README and the docs, checked against the code they describe.

- Every ``captioner ...`` command line in a ``bash``/``sh``/``console`` block is parsed by the
  real command line: its command, option names, value types, choices and arity must be
  accepted. Whether the files it names exist is the reader's business, not the parser's.
- Every ``python scripts/<name>.py`` line names a script that exists and answers ``--help``.
- Blocks marked ``<!-- docs-test: run -->`` are run as written, and must succeed, in one
  empty folder, page after page in the site's order: every file a block uses was made by an
  earlier block, as for a reader. A ``<!-- docs-test: serve-demo -->`` block starts the server
  it shows; the ``<!-- docs-test: against-server -->`` blocks after it are run against it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from captioner.cli import CheckpointPath, cli
from support.api_helpers import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*docs-test:\s*([\w-]+)\s*-->")
SEPARATORS = {"&&", "||", ";", "|"}


@dataclass(frozen=True)
class Block:
    """One fenced code block and the docs-test marker written above it, if any."""

    page: Path
    line: int
    lang: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def read_blocks(page: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)", lines[i])
        if not fence:
            i += 1
            continue
        start, indent, lang = i, len(fence.group(1)), fence.group(2)
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][indent:])
            i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marked = MARKER.search(previous)
        blocks.append(
            Block(page, start + 1, lang, "\n".join(body), marked.group(1) if marked else None)
        )
        i += 1
    return blocks


BLOCKS = [block for page in PAGES for block in read_blocks(page)]


def command_lines(block: Block) -> list[str]:
    """The commands of a shell block: continuations joined, console prompts and output dropped."""
    text = block.text.replace("\\\n", " ")
    lines = text.splitlines()
    if block.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def segments(line: str) -> Iterator[list[str]]:
    """Each simple command of a line, without its leading ``VAR=value`` assignments."""
    current: list[str] = []
    for token in [*shlex.split(line, comments=True), ";"]:
        if token in SEPARATORS:
            while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                current.pop(0)
            if current:
                yield current
            current = []
        else:
            current.append(token)


def captioner_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``captioner`` (or ``python -m captioner``), else None."""
    program = Path(argv[0]).name
    if program == "captioner":
        return argv[1:]
    if program.startswith("python") and argv[1:3] == ["-m", "captioner"]:
        return argv[3:]
    return None


def script_path(argv: list[str]) -> str | None:
    program = Path(argv[0]).name
    if program.startswith("python") and len(argv) > 1 and argv[1].startswith("scripts/"):
        return argv[1]
    return None


SHELL_BLOCKS = [block for block in BLOCKS if block.lang in SHELLS]
CAPTIONER_LINES = [
    pytest.param(args, id=f"{block.where} captioner {' '.join(args)[:60]}")
    for block in SHELL_BLOCKS
    for line in command_lines(block)
    for argv in segments(line)
    if (args := captioner_args(argv)) is not None
]
SCRIPTS = sorted(
    {
        path
        for block in SHELL_BLOCKS
        for line in command_lines(block)
        for argv in segments(line)
        if (path := script_path(argv)) is not None
    }
)


def test_the_docs_have_commands_to_check() -> None:
    assert len(CAPTIONER_LINES) >= 20
    assert {"scripts/download_checkpoint.py", "scripts/bench_server.py"} <= set(SCRIPTS)
    assert {b.marker for b in BLOCKS} >= {"run", "serve-demo", "against-server"}


@pytest.fixture
def lenient_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse without looking for the files a command names: they are the reader's."""
    commands = [cli, *cli.commands.values()]
    for command in commands:
        for param in command.params:
            if isinstance(param.type, click.Path):
                monkeypatch.setattr(param.type, "exists", False)
    monkeypatch.setattr(CheckpointPath, "convert", lambda self, value, param, ctx: Path(value))


@pytest.mark.usefixtures("lenient_paths")
@pytest.mark.parametrize("args", CAPTIONER_LINES)
def test_every_captioner_command_parses(args: list[str]) -> None:
    group = click.Context(cli, info_name="captioner", **cli.context_settings)  # as run
    name, *rest = args
    command = cli.get_command(group, name)
    assert command is not None, f"unknown command {name!r}"
    with command.make_context(name, rest, parent=group):
        pass


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_exists_and_answers_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, script, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()


# --- running the marked blocks --------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A reader's empty folder, with only the ``.venv`` the pages install (this test's)."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return tmp_path


def reader_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str], port: int | None = None) -> str:
    """Run each command line of ``block`` (a Python block as one program); returns what the
    last one printed."""
    if block.lang == "python":
        code = block.text
        if port is not None:
            code = code.replace("localhost:5000", f"127.0.0.1:{port}")
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{block.where}:\n{done.stdout}\n{done.stderr}"
        assert done.stdout.strip(), f"{block.where} printed nothing"
        return done.stdout
    stdout = ""
    for line in command_lines(block):
        if port is not None:
            line = line.replace("localhost:5000", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail; {line}"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{block.where}: {line}\n{done.stdout}\n{done.stderr}"
        assert done.stdout.strip(), f"{block.where}: {line} printed nothing"
        stdout = done.stdout
    return stdout


def documented_output(block: Block) -> dict[str, Any] | None:
    """The JSON block right after ``block`` on its page, the answer the docs show, if any."""
    following = [b for b in BLOCKS if b.page == block.page and b.line > block.line]
    if following and following[0].lang == "json":
        return dict(json.loads(following[0].text))
    return None


def assert_same_captions(actual: dict[str, Any], shown: dict[str, Any], where: str) -> None:
    """The captions the docs show are the real ones, with probabilities as rounded there."""
    pairs = list(zip(actual["predictions"], shown["predictions"], strict=True))
    for real, documented in pairs:
        assert real["caption"] == documented["caption"], where
        for key in ("probability", "logprob"):
            assert abs(real[key] - documented[key]) <= 5e-5, (where, key)


def reading_order() -> list[Path]:
    """The pages in the site's navigation order: the order a reader follows them in."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    return [REPO / "docs" / next(iter(entry.values())) for entry in config["nav"]]


@pytest.mark.slow
def test_the_pages_run_as_written_in_reading_order(workdir: Path) -> None:
    """Each marked block, run in one folder in the order a reader meets them: the files a
    block uses are the ones an earlier block made. The ``serve-demo`` block starts the
    server the ``against-server`` blocks then talk to."""
    marked = [b for page in reading_order() for b in read_blocks(page) if b.marker]
    assert [b.marker for b in marked].count("serve-demo") == 1
    serving = next(b for b in marked if b.marker == "serve-demo")
    assert marked.index(serving) < min(
        i for i, b in enumerate(marked) if b.marker == "against-server"
    )
    port = free_port()
    env = reader_env(CAPTIONER_PORT=str(port), CAPTIONER_HOST="127.0.0.1")
    process: subprocess.Popen[bytes] | None = None
    try:
        for block in marked:
            if block.marker == "serve-demo":
                (command,) = command_lines(block)
                process = subprocess.Popen(
                    ["bash", "-c", f"exec {command}"],
                    cwd=workdir,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                wait_until_ready(
                    process,
                    f"http://127.0.0.1:{port}",
                    120,
                    lambda where=block.where: f"{where}: the server stopped",
                )
            elif block.marker == "against-server":
                output = run_block(block, workdir, env, port=port)
                shown = documented_output(block)
                if shown is not None:
                    assert_same_captions(json.loads(output), shown, block.where)
            elif block.marker == "run":
                run_block(block, workdir, reader_env())
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
