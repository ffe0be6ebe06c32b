"""``prepare``'s worker pools: verify's pool starts the forkserver, the cache's pools fork from it.

The forkserver imports the modules of :data:`cxrgen.utils.threads.FORKSERVER_PRELOAD` once, when it starts, and every
worker forks with them loaded. This times ``cxrgen prepare --until cache`` on 2 workers, each run in a fresh
process on a fresh study folder, with that preload and with none (what happened before verify's pool set it: the
cache's preload came after the forkserver had started, so no pool had one). Runs alternate, so a load change on
the machine hits both.

    .venv/bin/python benchmarks/prepare_pools.py [--repeats 3] [--scale 0.05]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cxrgen.synthetic import write_synthetic

CHILD = """
import sys, time
from cxrgen.utils import threads
if sys.argv[2] == "none":
    threads.FORKSERVER_PRELOAD = ()
from cxrgen.runner.prepare import run_prepare
from cxrgen.study.workspace import Study
study = Study.load(sys.argv[1])
began = time.perf_counter()
run_prepare(study, until="cache", workers=2)
print(time.perf_counter() - began)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_synthetic(data, scale=args.scale, image_size=128, workers=2)
        study = data / "study.yaml"
        out = data / "runs" / "study"
        times: dict[str, list[float]] = {"preload": [], "none": []}
        for _ in range(args.repeats):
            for mode in times:
                shutil.rmtree(out, ignore_errors=True)
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, str(study), mode], capture_output=True, text=True, check=True
                )
                times[mode].append(float(done.stdout.split()[-1]))
        images = sum(1 for _ in data.rglob("*.jpg")) + sum(1 for _ in data.rglob("*.png"))
    print(f"prepare --until cache, 2 workers, {images} synthetic images (load average {os.getloadavg()[0]:.1f})\n")
    print("| forkserver preload | median s | runs (s) |")
    print("|---|---|---|")
    for mode, values in times.items():
        print(f"| {mode} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    ratio = statistics.median(times["none"]) / statistics.median(times["preload"])
    print(f"\nwithout the preload / with it: {ratio:.2f}x")


if __name__ == "__main__":
    main()
