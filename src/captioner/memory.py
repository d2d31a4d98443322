"""Give back the memory that start-up leaves resident and serving never touches again.

Two kinds, measured on the full-size model (``scripts/deploy_footprint.py``):

- TensorFlow's shared libraries: importing TensorFlow runs the registration code of every
  op and kernel it has, spread over 850 MB of library, and leaves about 280 MB of it
  resident. Those pages are clean copies of the library file; serving runs a small part
  of them. :func:`release_library_pages` asks the kernel to drop them now
  (``MADV_PAGEOUT``), so loading and warm-up bring back what the model needs and the rest
  stays on disk; a page needed later is read back from the file, as after any eviction.
  Pages that another process maps too are left alone by the kernel.
- The C heap: arrays freed after loading stay in glibc's heap as free space that
  TensorFlow's allocator does not draw from; :func:`return_freed_heap` (``malloc_trim``)
  hands it back.

Both are requests to the operating system: on a system without them (not Linux, not glibc,
a kernel older than 5.4) they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from pathlib import Path

__all__ = ["release_library_pages", "resident_mib", "return_freed_heap"]

_MADV_PAGEOUT = 21  # Linux 5.4+


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


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


def release_library_pages(marker: str = "tensorflow") -> int:
    """Ask the kernel to drop the resident pages of the read-only library mappings of files
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
    if libc is None or not hasattr(libc, "madvise"):
        return 0
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or marker not in fields[5] or "w" in fields[1]:
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        if start % mmap.PAGESIZE == 0 and libc.madvise(start, end - start, _MADV_PAGEOUT) == 0:
            released += 1
    return released


def return_freed_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
