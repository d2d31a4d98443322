#!/usr/bin/env python3
"""Install the pretrained im2txt model: ``captioner download`` without the CLI on PATH.

Docker builds and Kubernetes init containers call this script; it takes the same options
(``--dest``, ``--url``, ``--force``, ``--from-file``, ``--vocab-file``, ``--quiet``). It uses
the installed ``captioner`` package, or else the one in the checkout it lives in; when a
library the package needs is missing, it says in one line what to install.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
PROG_NAME = "download_checkpoint.py"


def _import_checkout_package() -> None:
    """Import ``captioner`` from this checkout's ``src/`` (the package is not installed)."""
    package = CHECKOUT / "src" / "captioner"
    spec = importlib.util.spec_from_file_location(
        "captioner", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError("no module named 'captioner'", name="captioner")
    module = importlib.util.module_from_spec(spec)
    sys.modules["captioner"] = module
    spec.loader.exec_module(module)


def main() -> int:
    """Run ``captioner download``; 2 with one line when the package cannot be imported."""
    try:
        try:
            import captioner  # noqa: F401 - the installed package, when there is one
        except ModuleNotFoundError as exc:
            if exc.name != "captioner":
                raise
            _import_checkout_package()
        from captioner.cli import download
    except ModuleNotFoundError as exc:
        print(
            f"{PROG_NAME}: the Python package {exc.name!r} is missing; install the project and "
            f"its dependencies first: python3 -m pip install {CHECKOUT} (or run this script "
            "with the Python of the environment you installed it in, such as .venv/bin/python)",
            file=sys.stderr,
        )
        return 2
    download.main(sys.argv[1:], prog_name=PROG_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
