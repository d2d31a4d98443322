"""The ``captioner`` command line: parse flags, build Settings, call the library.

Library errors (:class:`captioner.errors.CaptionerError`) become one-line messages and a
non-zero exit status here, at the edge; nothing below this module knows about click.
Heavy modules (TensorFlow, the server) are imported inside each command so that
``captioner --help`` stays instant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from captioner.errors import CaptionerError

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(func: F) -> F:
    """Turn a CaptionerError into ``Error: <message>`` and exit status 1, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CaptionerError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="captioner")
def cli() -> None:
    """Caption images with the Show and Tell (im2txt) model, serve it, train it."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="captioner")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
