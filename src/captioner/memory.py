"""Give back to the operating system memory the process holds but does not use.

Two kinds, each measured by ``scripts/deploy_footprint.py``; the figures are in
``docs/performance.md`` ("Memory and start-up"), not here, where they would go stale:

- Freed heap: glibc's allocator keeps freed memory inside its heaps for reuse, and hands
  back only what lies at a heap's top, so after loading a checkpoint, or after a burst of
  large uploads and decodes, the resident size stays near the peak although little of it is
  in use. :func:`release_free_memory` (``malloc_trim(0)``) returns every free page of every
  heap. Elsewhere (musl, macOS) it does nothing.
- TensorFlow's shared libraries: importing TensorFlow runs the registration code of every
  op and kernel it has, across all its libraries, and leaves a large part of them resident.
  Those pages are clean copies of the library files; serving runs a small part
  of them. :func:`release_library_pages` asks the kernel to drop them (``MADV_PAGEOUT``,
  Linux 5.4+), so loading and warm-up bring back what the model needs and the rest stays on
  disk; a page needed later is read back from the file, as after any eviction. Pages that
  another process maps too are left alone by the kernel. Elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["release_free_memory", "release_library_pages", "resident_mib"]

_MADV_PAGEOUT = 21  # Linux 5.4+


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; True if any were returned."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def release_library_pages(marker: str = "tensorflow") -> int:
    """Ask the kernel to drop the resident pages of the read-only mappings of library files
    whose path contains ``marker`` (TensorFlow's by default).

    Call it after the import and before loading a model: loading and warm-up then read
    back what serving needs, so first requests are not slowed.

    Returns:
        The number of mappings the kernel accepted the request for (0 where unsupported).
    """
    libc = _libc()
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    if libc is None:
        return 0
    released = 0
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or marker not in fields[5] or "w" in fields[1]:
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        if start % mmap.PAGESIZE == 0 and libc.madvise(start, end - start, _MADV_PAGEOUT) == 0:
            released += 1
    return released


def resident_mib() -> float:
    """This process's resident memory (VmRSS) in MiB; 0.0 where ``/proc`` is missing."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@cache
def _glibc() -> Any:
    """glibc, if this process runs on it (the one C library with ``malloc_trim``)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError, TypeError):
        return None
    return libc


@cache
def _libc() -> Any:
    """The C library, if it has ``madvise``."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
    except (OSError, AttributeError, TypeError):
        return None
    return libc
