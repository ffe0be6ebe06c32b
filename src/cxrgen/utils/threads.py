"""Worker processes: where they come from, and one compute thread each (the pools run one process per core, so
library thread pools would oversubscribe them: 2 cores x 2 OpenCV threads x 2 BLAS threads ...)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from multiprocessing.context import ForkServerContext
from multiprocessing.pool import Pool

import cv2
import numba
from threadpoolctl import threadpool_limits

#: Modules the forkserver imports once, so that every worker forks with the decoders and engines loaded.
FORKSERVER_PRELOAD = ("__main__", "cxrgen.data.cache")

#: Read by OpenMP, MKL and OpenBLAS when they start: torch (the ``torch`` engine) loads after the pool starts.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pin_one_thread() -> None:
    """Limit OpenCV, numba, torch and every BLAS/OpenMP pool threadpoolctl knows to one thread in this process.

    Meant as a ``ProcessPoolExecutor`` initializer; the limits last for the life of the worker, and the
    environment variables also hold the libraries it loads later to one thread.
    """
    os.environ.update(dict.fromkeys(_THREAD_VARIABLES, "1"))
    cv2.setNumThreads(1)
    numba.set_num_threads(1)
    threadpool_limits(limits=1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def worker_context() -> ForkServerContext:
    """The multiprocessing context of every pool (verify's and the cache's).

    forkserver, because workers must not inherit a parent that may hold torch or OpenMP threads. The preload is set
    here, before any pool exists: the forkserver reads it only when it starts, and whichever pool comes first
    starts it for all (``prepare`` runs one cache pool per dataset and size, then verify's for the rest). Measured with
    ``benchmarks/prepare_pools.py`` (1,321 synthetic images, 2 workers): ``prepare --until cache`` 4.5 s with the
    preload, 6.6 s without.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return context


@contextlib.contextmanager
def worker_pool(workers: int, initializer: Callable[[], object] | None = None) -> Iterator[Pool]:
    """A :func:`worker_context` pool for one stage's work.

    A ``multiprocessing.Pool``, not a ``ProcessPoolExecutor``: an error, SIGTERM or Ctrl-C (raised as
    :class:`cxrgen.utils.interrupts.Interrupted`) leaving the block terminates the workers at once, so none outlives the
    command. Leaving it normally closes and joins them, so the pool's queues and semaphores are released now, not
    left to the resource tracker at exit ("leaked semaphore objects").
    """
    with worker_context().Pool(workers, initializer=initializer) as pool:
        yield pool
        pool.close()
        pool.join()
