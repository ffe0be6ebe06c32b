"""The C allocator's handling of large arrays, for loops that allocate and free arrays of the same sizes per item.

glibc serves each allocation above its threshold (128 KiB, raised as far as 32 MiB as large blocks are freed) with
fresh pages from the kernel and gives them back when it is freed, so the next image's arrays fault in and zero
every page again. Preprocessing a 1024 x 1024 NIH PNG took 1,400 page faults per image that way, a quarter of its
CPU time (``benchmarks/prepare_command.py``; docs/performance.md). Elsewhere than glibc nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's initial value of both thresholds, restored on leaving.
_DEFAULT = 128 * 1024
#: Arrays up to this size come from the heap and stay there when freed: a 6,300 x 6,300 float32 image is 160 MB.
KEEP = 256 * 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    """The process's C library where it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def reused_heap(limit: int = KEEP) -> Iterator[None]:
    """Inside, arrays up to ``limit`` bytes are carved from the heap and freed back to it, ready for the next item,
    instead of mapped from the kernel and unmapped; on leaving, the free heap goes back to the kernel and glibc's
    initial thresholds hold again."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, limit)
    libc.mallopt(_M_TRIM_THRESHOLD, limit)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT)
        libc.malloc_trim(0)
