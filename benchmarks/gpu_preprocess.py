"""GPU path vs the CPU ``exact`` engine: images/s and agreement, on synthetic JPEGs of CheXpert's two shapes.

One command on a GPU machine: ``.venv/bin/python benchmarks/gpu_preprocess.py`` (``--device cpu`` runs the same
torch code on CPU, for a dry run). Per shape it writes ``--count`` JPEGs, times the CPU engine on one thread
(decode included) and the torch path per batch size (nvJPEG decode included, synchronized), times the device
decode alone, and prints the largest uint8 difference to the CPU engine and the share of pixels that differ.
Last, ``prepare``'s cache end to end on the same files: ``engine: torch`` on the device (one worker process and
``--workers``) against ``engine: exact`` on ``--workers`` CPU processes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxrgen.data.cache import build_cache, open_cache
from cxrgen.images import gpu as gpu_preprocess
from cxrgen.images.preprocess import Engine, preprocess
from cxrgen.utils.threads import pin_one_thread

SHAPES = {"CheXpert-small 320x390": (320, 390), "full-size 2320x2828": (2320, 2828)}


def _write(folder: Path, width: int, height: int, count: int) -> list[Path]:
    """``count`` chest-like JPEGs (different noise each) of one shape."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    lungs = np.exp(-(((x - 0.32) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(
        -(((x - 0.68) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)
    )
    paths = []
    for i in range(count):
        body = 200 - 120 * lungs + np.random.default_rng(i).normal(0, 6, (height, width))
        path = folder / f"{width}x{height}_{i}.jpg"
        Image.fromarray(np.clip(body, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the cache rows")
    args = parser.parse_args()
    pin_one_thread()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch path on {args.device} ({name}) vs the exact engine on 1 CPU thread, {args.size} px\n")
    print(
        "| input | CPU exact img/s | batch | device img/s | vs CPU thread | device decode img/s | max diff | differ |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (width, height) in SHAPES.items():
            paths = _write(Path(tmp), width, height, args.count)
            sample = paths[: max(2, args.count // 8)]
            preprocess(sample[0], args.size, "exact")  # warm-up: numba's compiled kernels load
            start = time.perf_counter()
            reference = [preprocess(p, args.size, "exact") for p in sample]
            cpu_rate = len(sample) / (time.perf_counter() - start)
            for batch in args.batch_sizes:
                list(gpu_preprocess.preprocess_jpegs(paths[:batch], args.size, args.device, batch))  # warm-up
                _sync(args.device)
                start = time.perf_counter()
                out = dict(gpu_preprocess.preprocess_jpegs(paths, args.size, args.device, batch))
                _sync(args.device)
                rate = len(paths) / (time.perf_counter() - start)
                start = time.perf_counter()
                for first in range(0, len(paths), batch):
                    gpu_preprocess.decode_jpegs(paths[first : first + batch], args.device)
                _sync(args.device)
                decode_rate = len(paths) / (time.perf_counter() - start)
                diffs = [np.abs(out[i].astype(np.int16) - ref) for i, ref in enumerate(reference)]
                worst = max(int(d.max()) for d in diffs)
                share = 100 * sum(int((d > 0).sum()) for d in diffs) / sum(d.size for d in diffs)
                print(
                    f"| {label} | {cpu_rate:.1f} | {batch} | {rate:.1f} | {rate / cpu_rate:.1f}x "
                    f"| {decode_rate:.1f} | {worst} | {share:.4f} % |"
                )
        _cache_table(Path(tmp), args.size, args.device, args.workers)


def _cache_table(folder: Path, size: int, device: str, workers: int) -> None:
    """``build_cache`` over every JPEG written above, per engine and worker count: images/s and agreement."""
    paths = sorted(folder.glob("*.jpg"))
    rows = pd.DataFrame({"image_id": [p.stem for p in paths], "path": [p.name for p in paths]})
    print(f"\nprepare's cache over those {len(paths)} JPEGs, {size} px (load average {os.getloadavg()[0]:.1f})\n")
    print("| engine | device | workers | img/s | max diff to exact |")
    print("|---|---|---|---|---|")
    # One row per distinct setting: a second row of the same folder would time reading a finished cache.
    runs: list[tuple[Engine, str, int]] = list(
        dict.fromkeys([("exact", "cpu", workers), ("torch", device, 1), ("torch", device, workers)])
    )
    built = {}
    for engine, where, count in runs:
        study = folder / f"study-{engine}-{where}-{count}"
        start = time.perf_counter()
        build_cache(rows, folder, study, "bench", size, engine, True, count, chunk_size=16, device=where)
        rate = len(paths) / (time.perf_counter() - start)
        built[(engine, count)] = open_cache(study, "bench", size, engine, True)[0].astype(np.int16)
        worst = int(np.abs(built[(engine, count)] - built[("exact", workers)]).max())
        print(f"| {engine} | {where} | {count} | {rate:.1f} | {worst} |")


if __name__ == "__main__":
    main()
