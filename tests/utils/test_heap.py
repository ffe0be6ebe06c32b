"""reused_heap: large arrays come from the heap inside it (reused by the next ones), mapped afresh after it."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from cxrgen.utils import heap

FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]


def _mapped_bytes() -> int:
    """Bytes glibc holds in separately mapped blocks (``mallinfo2().hblkhd``)."""
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().hblkhd)


def _mapped_while_alive(size: int = 24 * 1024 * 1024) -> int:
    before = _mapped_bytes()
    array = np.ones(size // 8)
    mapped = _mapped_bytes() - before
    del array
    return mapped


@pytest.mark.skipif(heap._glibc() is None or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="not glibc")
def test_large_arrays_come_from_the_heap_inside_only() -> None:
    with heap.reused_heap():
        assert _mapped_while_alive() == 0  # carved from the heap, reused by the next one once freed
    assert _mapped_while_alive() >= 24 * 1024 * 1024  # heap trimmed, initial thresholds: mapped afresh
