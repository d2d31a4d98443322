#!/usr/bin/env python3
"""Install the pretrained im2txt model: ``captioner download`` for images without the CLI on PATH.

Docker builds and Kubernetes init containers call this script; it takes the same options
(``--dest``, ``--url``, ``--force``, ``--from-file``, ``--vocab-file``, ``--quiet``).
"""

from __future__ import annotations

import sys

from captioner.cli import download

if __name__ == "__main__":
    sys.exit(download(sys.argv[1:], prog_name="download_checkpoint.py"))
