"""One compute thread per worker process: the pools run one process per core, so library thread pools would
oversubscribe them (2 cores x 2 OpenCV threads x 2 BLAS threads ...)."""

from __future__ import annotations

import cv2
import numba
from threadpoolctl import threadpool_limits


def pin_one_thread() -> None:
    """Limit OpenCV, numba and every BLAS/OpenMP pool threadpoolctl knows to one thread in this process.

    Meant as a ``ProcessPoolExecutor`` initializer; the limits last for the life of the worker.
    """
    cv2.setNumThreads(1)
    numba.set_num_threads(1)
    threadpool_limits(limits=1)
