"""Every pool's workers fork from one forkserver that imported the engines once, whichever pool started it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from cxrgen.utils.threads import worker_context
probe = "sorted(m for m in ('cxrgen.data.cache', 'cxrgen.images.preprocess', 'torch')"
probe += " if m in __import__('sys').modules)"
with worker_context().Pool(2) as pool:  # the first pool of the process starts the forkserver, as verify's does
    print(pool.apply(eval, (probe,)))
"""


def test_the_first_pool_starts_the_forkserver_with_the_engines_loaded() -> None:
    """A fresh process (a forkserver of its own); ``eval`` is a builtin, so unpickling the task imports nothing."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    # The engines are in the workers, torch is not.
    assert done.stdout.split("\n")[-2] == "['cxrgen.data.cache', 'cxrgen.images.preprocess']"
