"""Log set-up for ``captioner serve``: one line per record on stderr, access lines as JSON."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]


def configure_logging(level: str) -> None:
    """Send the ``captioner`` loggers (access log included) to stderr at ``level``.

    Uvicorn configures its own loggers; its access log is off, since ours has the route,
    the batch size and the rejection reason.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("captioner")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
