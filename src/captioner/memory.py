"""Give the memory the process has freed back to the operating system.

glibc's allocator keeps freed memory inside its heaps for reuse, and hands back only
what lies at a heap's top, so after a burst of large uploads and decodes the resident
size stays near the burst's peak although little of it is in use. ``malloc_trim(0)``
returns every free page of every heap. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

__all__ = ["release_free_memory"]


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; True if any were returned."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


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
