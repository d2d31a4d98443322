"""MkDocs hook: fill the pages whose content comes from the code, so they cannot drift.

``<!-- settings-table -->`` becomes the table of every :class:`captioner.config.Settings`
field: its environment variable, its ``captioner serve`` option (if it has one), its default
and its description, all read from the field and the click command themselves.
"""

from __future__ import annotations

from typing import Any

import click

SETTINGS_MARKER = "<!-- settings-table -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the markers of a page with their generated content."""
    if SETTINGS_MARKER in markdown:
        markdown = markdown.replace(SETTINGS_MARKER, settings_table())
    return markdown


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
        default = default if default.startswith("the ") or default == "none" else f"`{default}`"
        rows.append(f"| {env} | {flag} | {default} | {field.description} |")
    return "\n".join(rows)
