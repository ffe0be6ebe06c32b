"""Per-image speed of the three preprocessing engines and how far apart their pixels are.

Three kinds of input: a CheXpert-small-like JPEG (~320x390), an NIH PNG (1024x1024; a real one from
../shared/realdata when present) and a full-resolution JPEG (2320x2828, an NIH image upscaled). Each is run
through ``preprocess`` with each engine, one thread (the cache runs one process per core), and the uint8
outputs are compared; decode is timed alone. Last, the parallel efficiency of ``prepare``'s cache on 2 worker
processes. Run: ``.venv/bin/python benchmarks/preprocess.py [--size 224]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cxrgen import images
from cxrgen.images import preprocess
from cxrgen.threads import pin_one_thread

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


def _parallel_efficiency(folder: Path, source: Path, size: int, count: int = 16) -> tuple[float, float, float]:
    """Seconds to cache ``count`` copies of ``source`` with the exact engine on 1 and 2 workers, and the efficiency."""
    import pandas as pd

    from cxrgen.cache import build_cache

    data = folder / "parallel"
    data.mkdir()
    for i in range(count):
        (data / f"{i}.png").write_bytes(source.read_bytes())
    rows = pd.DataFrame({"image_id": [str(i) for i in range(count)], "path": [f"{i}.png" for i in range(count)]})
    seconds = []
    for workers in (1, 2):
        start = time.perf_counter()
        build_cache(rows, data, folder / f"study{workers}", "bench", size, "exact", True, workers, chunk_size=2)
        seconds.append(time.perf_counter() - start)
    return seconds[0], seconds[1], seconds[0] / seconds[1] / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    size = parser.parse_args().size
    cv2.setNumThreads(1)
    pin_one_thread()
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
            resize_rows.append((name, resize_paper, resize_fast, exact_resize))
        print("\nresize alone (same CLAHE input): skimage.transform.resize vs the OpenCV rebuild\n")
        print("| input | skimage img/s | opencv img/s | speed-up | max abs difference (0-1 scale) |")
        print("|---|---|---|---|---|")
        for name, paper, fast, exact_resize in resize_rows:
            print(f"| {name} | {paper:.1f} | {fast:.1f} | {fast / paper:.1f}x | {exact_resize:.1e} |")
        one, two, efficiency = _parallel_efficiency(Path(tmp), inputs[1][1], size)
        print(
            f"\nparallel efficiency, exact engine, 16 NIH PNGs cached: 1 worker {one:.2f} s, 2 workers {two:.2f} s, "
            f"efficiency {100 * efficiency:.0f} % (speed-up / 2; pool start-up included)"
        )


if __name__ == "__main__":
    main()
