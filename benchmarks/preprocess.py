"""Per-image speed of the three preprocessing engines and how far apart their pixels are.

Three kinds of input: a CheXpert-small-like JPEG (~320x390), an NIH PNG (1024x1024; a real one from
../shared/realdata when present) and a full-resolution JPEG (2320x2828, an NIH image upscaled). Each is run
through ``preprocess`` with each engine, one thread (the cache runs one process per core), and the uint8
outputs are compared; decode is timed alone. Last, the parallel efficiency of ``prepare``'s cache on 2 worker
processes, with numba's disk cache warm and cold (a first run on a machine, in a fresh process with an empty
``NUMBA_CACHE_DIR``), beside the load average. Run: ``.venv/bin/python benchmarks/preprocess.py [--size 224]
[--parallel-only]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cxrgen.images import fast_resize
from cxrgen.images import preprocess as images
from cxrgen.images.preprocess import preprocess
from cxrgen.utils.threads import pin_one_thread

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "nih" / "images_1024"


def _source() -> tuple[np.ndarray, str]:
    """An 8-bit 1024x1024 chest X-ray: a real NIH PNG when available, else a smooth synthetic one."""
    pngs = sorted(REALDATA.glob("*.png")) if REALDATA.is_dir() else []
    if pngs:
        return np.asarray(Image.open(pngs[0]).convert("L")), f"real NIH {pngs[0].name}"
    y, x = np.mgrid[0:1024, 0:1024] / 1024.0
    lungs = np.exp(-(((x - 0.32) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(
        -(((x - 0.68) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)
    )
    body = 200 - 120 * lungs + np.random.default_rng(0).normal(0, 6, (1024, 1024))
    return np.clip(body, 0, 255).astype(np.uint8), "synthetic phantom"


def _inputs(folder: Path) -> list[tuple[str, Path, int]]:
    """(name, file, repeats) for the three kinds of input, written into ``folder``."""
    gray, origin = _source()
    small = folder / "chexpert_small.jpg"
    Image.fromarray(cv2.resize(gray, (320, 390), interpolation=cv2.INTER_AREA)).save(small, quality=95)
    nih = folder / "nih.png"
    Image.fromarray(gray).save(nih)
    full = folder / "full.jpg"
    Image.fromarray(cv2.resize(gray, (2320, 2828), interpolation=cv2.INTER_CUBIC)).save(full, quality=95)
    return [
        ("CheXpert-small JPEG 320x390", small, 10),
        (f"NIH PNG 1024x1024 ({origin})", nih, 4),
        ("full-size JPEG 2320x2828", full, 2),
    ]


def _rate(step: Callable[[], object], repeats: int) -> float:
    step()  # warm-up: imports, caches, OpenCV kernels
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return repeats / (time.perf_counter() - start)


def _preprocess_many(paths: list[Path], size: int) -> int:
    for path in paths:
        preprocess(path, size, "exact")
    return len(paths)


def _warm(path: Path, size: int) -> None:
    """Load the worker's libraries and numba kernels; the pause lets the other worker take the other call."""
    preprocess(path, size, "exact")
    time.sleep(1.0)


# A cache build in a fresh interpreter, timed inside it (imports excluded): argv data, study, size, workers, count.
_BUILD = """
import sys, time
import pandas as pd
from cxrgen.data.cache import build_cache
data, study, size, workers, count = sys.argv[1:]
rows = pd.DataFrame({"image_id": [str(i) for i in range(int(count))], "path": [f"{i}.png" for i in range(int(count))]})
start = time.perf_counter()
build_cache(rows, data, study, "bench", int(size), "exact", True, int(workers), chunk_size=4)
print(time.perf_counter() - start)
"""


def _cold_build(data: Path, study: Path, size: int, workers: int, count: int) -> float:
    """Seconds of a cache build whose numba kernels are compiled first (an empty ``NUMBA_CACHE_DIR``)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(study / "numba")}
    command = [sys.executable, "-c", _BUILD, str(data), str(study), str(size), str(workers), str(count)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def _parallel_efficiency(folder: Path, source: Path, size: int, count: int = 32) -> dict[str, float]:
    """Seconds for ``count`` NIH PNGs on 1 and 2 workers: ``prepare``'s cache end to end, and warm pools.

    The cache's figure includes starting the pool (imports and loading numba's cached kernels); with a cold
    numba cache also compiling them (once, in the parent, before the workers start). The warm figure is the
    steady state that a cache of 100k images sees.
    """
    import pandas as pd

    from cxrgen.data.cache import build_cache

    data = folder / "parallel"
    data.mkdir()
    paths = []
    for i in range(count):
        (data / f"{i}.png").write_bytes(source.read_bytes())
        paths.append(data / f"{i}.png")
    rows = pd.DataFrame({"image_id": [str(i) for i in range(count)], "path": [f"{i}.png" for i in range(count)]})
    result = {}
    for workers in (1, 2):
        start = time.perf_counter()
        build_cache(rows, data, folder / f"study{workers}", "bench", size, "exact", True, workers, chunk_size=4)
        result[f"cache {workers}"] = time.perf_counter() - start
        result[f"cold {workers}"] = _cold_build(data, folder / f"cold{workers}", size, workers, count)
    chunks = [paths[i : i + 4] for i in range(0, count, 4)]
    _preprocess_many(chunks[0], size)
    start = time.perf_counter()
    for chunk in chunks:
        _preprocess_many(chunk, size)
    result["warm 1"] = time.perf_counter() - start
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=context, initializer=pin_one_thread) as pool:
        list(pool.map(_warm, [source, source], [size, size]))
        start = time.perf_counter()
        list(pool.map(_preprocess_many, chunks, [size] * len(chunks)))
        result["warm 2"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--parallel-only", action="store_true", help="only the 2-worker efficiency table")
    args = parser.parse_args()
    size = args.size
    cv2.setNumThreads(1)
    pin_one_thread()
    if args.parallel_only:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            _print_parallel(folder, _inputs(folder)[1][1], size)
        return
    print(f"preprocess to {size}x{size}, one thread per image (images/s; difference of the uint8 outputs)\n")
    print(
        "| input | decode ms | skimage img/s | exact img/s | exact / skimage | engine only: exact / skimage "
        "| exact vs skimage max diff | opencv img/s | opencv / skimage | opencv vs skimage mean, max diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    resize_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = _inputs(Path(tmp))
        for name, path, repeats in inputs:
            decode_ms = 1000 / _rate(partial(images.decode, path), repeats)
            paper = _rate(partial(preprocess, path, size, "skimage"), repeats)
            exact = _rate(partial(preprocess, path, size, "exact"), repeats)
            fast = _rate(partial(preprocess, path, size, "opencv"), repeats)
            # The engines without the decode they share.
            decoded = images.decode(path)
            engine_paper = _rate(partial(images.preprocess_array, decoded, size, "skimage"), repeats)
            engine_exact = _rate(partial(images.preprocess_array, decoded, size, "exact"), repeats)
            reference = preprocess(path, size, "skimage").astype(int)
            exact_diff = np.abs(preprocess(path, size, "exact") - reference)
            diff = np.abs(preprocess(path, size, "opencv") - reference)
            print(
                f"| {name} | {decode_ms:.1f} | {paper:.1f} | {exact:.1f} | {exact / paper:.1f}x "
                f"| {engine_exact / engine_paper:.1f}x | {exact_diff.max()} | {fast:.1f} | {fast / paper:.1f}x "
                f"| {diff.mean():.2f}, {diff.max()} ({100 * diff.max() / 255:.1f} %) |"
            )
            equalized = images.clahe_skimage(decoded)
            exact_resize = np.abs(images.resize_skimage(equalized, size) - images.resize_opencv(equalized, size)).max()
            resize_paper = _rate(partial(images.resize_skimage, equalized, size), repeats)
            resize_fast = _rate(partial(images.resize_opencv, equalized, size), repeats)
            sparse_error = np.abs(images.resize_skimage(equalized, size) - fast_resize.resize(equalized, size)).max()
            resize_sparse = _rate(partial(fast_resize.resize, equalized, size), repeats)
            resize_rows.append((name, resize_paper, resize_fast, exact_resize, resize_sparse, sparse_error))
        print("\nresize alone (same CLAHE input): skimage.transform.resize vs the OpenCV rebuild (opencv engine)")
        print("and the sparse products (exact engine); max abs difference to skimage on the 0-1 scale\n")
        print("| input | skimage img/s | opencv img/s | speed-up | difference | sparse img/s | speed-up | difference |")
        print("|---|---|---|---|---|---|---|---|")
        for name, paper, fast, exact_resize, sparse_rate, sparse_error in resize_rows:
            print(
                f"| {name} | {paper:.1f} | {fast:.1f} | {fast / paper:.1f}x | {exact_resize:.1e} "
                f"| {sparse_rate:.1f} | {sparse_rate / paper:.1f}x | {sparse_error:.1e} |"
            )
        _print_parallel(Path(tmp), inputs[1][1], size)


def _print_parallel(folder: Path, source: Path, size: int) -> None:
    before = os.getloadavg()[0]
    seconds = _parallel_efficiency(folder, source, size)
    after = os.getloadavg()[0]
    print("\nparallel efficiency of the exact engine on 2 cores, 32 NIH PNGs (efficiency = speed-up / 2)")
    print(f"load average (1 min) {before:.1f} before, {after:.1f} after, on {os.cpu_count()} cores\n")
    print("| how | 1 worker s | 2 workers s | efficiency |")
    print("|---|---|---|---|")
    rows = (
        ("prepare's cache, pool start-up included", "cache"),
        ("prepare's cache, cold numba cache (compiled once, before the pool)", "cold"),
        ("warm worker pool", "warm"),
    )
    for how, key in rows:
        one, two = seconds[f"{key} 1"], seconds[f"{key} 2"]
        print(f"| {how} | {one:.2f} | {two:.2f} | {100 * one / two / 2:.0f} % |")


if __name__ == "__main__":
    main()
