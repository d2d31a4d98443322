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


def test_read_only_file_pages_go_and_come_back_intact() -> None:
    # A mapping only this child has (pages another process maps too stay resident: under
    # pytest, TensorFlow's libraries are mapped by the test process as well).
    figures = _run(
        "import json, mmap, os, tempfile\n"
        "from captioner.memory import release_library_pages, resident_mib\n"
        "with tempfile.NamedTemporaryFile(prefix='captioner-pageout-') as f:\n"
        "    f.write(os.urandom(64 * 2**20)); f.flush()\n"
        "    pages = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
        "    checksum = sum(pages[i] for i in range(0, len(pages), mmap.PAGESIZE))\n"
        "    before = resident_mib()\n"
        "    mappings = release_library_pages(marker=os.path.basename(f.name))\n"
        "    after = resident_mib()\n"
        "    again = sum(pages[i] for i in range(0, len(pages), mmap.PAGESIZE))\n"
        "print(json.dumps({'before': before, 'after': after, 'mappings': mappings,"
        " 'intact': checksum == again}))"
    )
    assert figures["mappings"] == 1
    assert figures["before"] - figures["after"] > 48, figures  # most of the 64 MB
    assert figures["intact"]  # read back from the file when touched again


def test_tensorflow_still_runs_after_its_pages_are_released() -> None:
    figures = _run(
        "import json, tensorflow as tf\n"
        "from captioner.memory import release_library_pages\n"
        "tf.constant(1.0) + 1\n"
        "mappings = release_library_pages()\n"
        "value = float(tf.reduce_sum(tf.nn.conv2d(tf.ones([1, 8, 8, 3]), tf.ones([3, 3, 3, 2]),"
        " 1, 'SAME')))\n"
        "print(json.dumps({'mappings': mappings, 'value': value}))"
    )
    assert figures["mappings"] > 0  # TensorFlow's read-only library mappings were found
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
