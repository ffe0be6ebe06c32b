"""Synthetic-hospital generation speed: images per second per core, and the whole default dataset.

The target is >= 200 images/s per core at 256 px so that the demo's data (about 3,400 images) takes well under
a minute on two cores. Rendering and encoding are timed per hospital on one core (their formats and sizes
differ: PNG at NIH, JPEG elsewhere), then the full ``write_synthetic`` with ``--workers`` processes.

    python benchmarks/synthesize.py [--size 256] [--workers 2] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cxrgen.synthetic.paper_sites import plan_chexpert, plan_mimic, plan_nih
from cxrgen.synthetic.render import render_task
from cxrgen.synthetic.write import write_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--images", type=int, default=300, help="images timed per hospital on one core")
    args = parser.parse_args()
    total_images, total_seconds = 0, 0.0
    for name, plan in (("chexpert", plan_chexpert), ("nih", plan_nih), ("mimic", plan_mimic)):
        tasks = plan(0, 1.0, args.size)[1][: args.images]
        start = time.perf_counter()
        for task in tasks:
            render_task(task, 0)
        seconds = time.perf_counter() - start
        total_images, total_seconds = total_images + len(tasks), total_seconds + seconds
        print(f"{name:<9} {task.shape[1]}x{task.shape[0]}  {len(tasks) / seconds:7.0f} images/s per core")
    print(f"{'all':<9} {'':>7}  {total_images / total_seconds:7.0f} images/s per core (render + encode, no disk)")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        out = write_synthetic(Path(folder) / "data", scale=args.scale, image_size=args.size, workers=args.workers)
        seconds = time.perf_counter() - start
        count = sum(1 for p in out.rglob("*") if p.suffix in (".jpg", ".png"))
        print(f"write_synthetic(scale={args.scale}, workers={args.workers}): {count} images in {seconds:.1f} s, "
              f"{count / seconds / args.workers:.0f} images/s per worker")


if __name__ == "__main__":
    main()
