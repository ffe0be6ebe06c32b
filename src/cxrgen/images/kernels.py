"""numba kernels cached on disk: the decorator of the compiled loops of :mod:`cxrgen.images.clahe` and
:mod:`cxrgen.images.png`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numba

log = logging.getLogger(__name__)


def numba_kernel(function: Callable[..., Any]) -> Any:
    """``numba.njit(cache=True, nogil=True)``, uncached where numba finds nowhere to write its cache.

    numba writes beside the kernel's module (``__pycache__``); in a read-only install, in ``$NUMBA_CACHE_DIR`` or
    the user's cache folder (``~/.cache/numba``). With none writable it refuses to cache at decoration, which would
    make the kernel's module unimportable; the kernels then compile once per process instead, and a warning says
    so.
    """
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        log.warning("numba cannot cache %s (%s): compiling it in every process; set NUMBA_CACHE_DIR", function, exc)
        return numba.njit(nogil=True)(function)
