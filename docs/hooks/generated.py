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
    from captioner.config import Settings

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
        env = _env_names(name, field)
        option = options.get(name)
        flag = f"`{option.opts[0]}`" if option is not None else ""
        rows.append(f"| {env} | {flag} | {_default(field)} | {field.description} |")
    return "\n".join(rows)


def _env_names(name: str, field: Any) -> str:
    alias = field.validation_alias
    choices = [c for c in getattr(alias, "choices", []) if isinstance(c, str) and c.isupper()]
    names = choices or [f"CAPTIONER_{name.upper()}"]
    return ", ".join(f"`{n}`" for n in names)


def _default(field: Any) -> str:
    extra = field.json_schema_extra or {}
    if "default_text" in extra:
        return str(extra["default_text"])
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if value == []:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"
