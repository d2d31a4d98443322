"""Memory given back after start-up: each helper in a fresh interpreter, measured there."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from captioner.memory import release_library_pages, resident_mib

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/proc and madvise: Linux")


def _run(code: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_tensorflows_start_up_pages_go_and_tensorflow_still_runs() -> None:
    figures = _run(
        "import json, tensorflow as tf\n"
        "from captioner.memory import release_library_pages, resident_mib\n"
        "tf.constant(1.0) + 1\n"
        "before = resident_mib()\n"
        "mappings = release_library_pages()\n"
        "after = resident_mib()\n"
        "value = float(tf.reduce_sum(tf.nn.conv2d(tf.ones([1, 8, 8, 3]), tf.ones([3, 3, 3, 2]),"
        " 1, 'SAME')))\n"
        "print(json.dumps({'before': before, 'after': after, 'mappings': mappings,"
        " 'value': value}))"
    )
    assert figures["mappings"] > 0
    # Importing TensorFlow leaves hundreds of MB of its library resident; most of it goes.
    assert figures["before"] - figures["after"] > 100, figures
    # A 3x3 SAME conv of ones over 8x8: per axis 2 + 6 * 3 + 2 = 22 taps; 3 in, 2 out channels.
    assert figures["value"] == 22 * 22 * 3 * 2


def test_only_matching_libraries_are_asked_for() -> None:
    assert release_library_pages(marker="no-such-library-anywhere") == 0
    assert resident_mib() > 0


def test_freed_heap_goes_back_to_the_system() -> None:
    figures = _run(
        "import json\n"
        "from captioner.memory import release_free_memory, resident_mib\n"
        "blocks = [bytearray(64 * 1024) for _ in range(3000)]  # ~190 MB in the C heap\n"
        "keep = blocks[-1]\n"
        "del blocks  # freed, but held by the heap below the last block\n"
        "before = resident_mib()\n"
        "release_free_memory()\n"
        "print(json.dumps({'before': before, 'after': resident_mib()}))"
    )
    assert figures["before"] - figures["after"] > 100, figures
