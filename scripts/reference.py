#!/usr/bin/env python3
"""Write the reference pages that come from the code: ``docs/settings.md`` and ``docs/cli.md``.

The text is committed, so the pages read the same on GitHub as on the built site, and
``--check`` (run by tests/docs) fails when a setting or an option changed without the pages.
Each page holds a generated block, ``<!-- reference: NAME -->`` ... ``<!-- /reference -->``:

- ``settings``: every :class:`captioner.config.Settings` field, its environment variable, its
  ``captioner serve`` option (if it has one), its default and its description;
- ``cli``: every command's own ``--help``, as ``captioner COMMAND --help`` prints it.

    python scripts/reference.py            # rewrite the blocks
    python scripts/reference.py --check    # report the pages that are out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- reference: (\w+) -->\n).*?(<!-- /reference -->)", re.DOTALL)
HELP_WIDTH = 100  # the help text is wrapped the same wherever the script runs


def settings_table() -> str:
    """A Markdown table of every setting, in declaration order."""
    from captioner.cli import serve
    from captioner.config import Settings, setting_default_text, setting_variables

    options = {
        param.name: param
        for param in serve.params
        if isinstance(param, click.Option) and param.name is not None
    }
    rows = [
        "| environment variable | `captioner serve` option | default | what it does |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        env = ", ".join(f"`{variable}`" for variable in setting_variables(name))
        option = options.get(name)
        flag = f"`{option.opts[0]}`" if option is not None else ""
        default = setting_default_text(name)
        default = default if default.startswith(("the ", "none")) else f"`{default}`"
        description = " ".join(str(field.description).split()).replace("|", "\\|")
        rows.append(f"| {env} | {flag} | {default} | {description} |")
    return "\n".join(rows)


def command_help() -> str:
    """Each command's ``--help``, under a heading of its own."""
    from captioner.cli import cli

    parts: list[str] = []
    # The group's context settings (``-h`` beside ``--help``), as ``captioner`` applies them.
    group = click.Context(
        cli, info_name="captioner", terminal_width=HELP_WIDTH, **cli.context_settings
    )
    for name in cli.list_commands(group):
        command = cli.get_command(group, name)
        assert command is not None
        ctx = click.Context(command, info_name=name, parent=group, terminal_width=HELP_WIDTH)
        text = command.get_help(ctx)
        parts.append(f"## captioner {name}\n\n```text\n{text}\n```")
    return "\n\n".join(parts)


GENERATORS: dict[str, Callable[[], str]] = {"settings": settings_table, "cli": command_help}
PAGES = {"settings": REPO / "docs" / "settings.md", "cli": REPO / "docs" / "cli.md"}


def render(page: str) -> str:
    """``page`` with every generated block rewritten from the code."""

    def block(match: re.Match[str]) -> str:
        return f"{match.group(1)}{GENERATORS[match.group(2)]()}\n{match.group(3)}"

    return BLOCK.sub(block, page)


def check() -> list[str]:
    """The pages whose generated blocks differ from what the code says now (or that lack one)."""
    problems = []
    for name, path in PAGES.items():
        text = path.read_text()
        if f"<!-- reference: {name} -->" not in text:
            problems.append(f"{path.relative_to(REPO)}: no <!-- reference: {name} --> block")
        elif render(text) != text:
            problems.append(
                f"{path.relative_to(REPO)}: out of date; run python scripts/reference.py"
            )
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report, change nothing")
    args = parser.parse_args()
    if args.check:
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        sys.exit(1 if problems else 0)
    for path in PAGES.values():
        path.write_text(render(path.read_text()))


if __name__ == "__main__":
    main()
