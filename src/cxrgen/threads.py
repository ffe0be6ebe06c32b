"""One compute thread per worker process: the pools run one process per core, so library thread pools would
oversubscribe them (2 cores x 2 OpenCV threads x 2 BLAS threads ...)."""

from __future__ import annotations

import os
import sys

import cv2
import numba
from threadpoolctl import threadpool_limits

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
