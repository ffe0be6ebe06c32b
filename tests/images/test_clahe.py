"""The ``exact`` engine against scikit-image: bit-equal CLAHE, uint8 caches within 1/255, real and synthetic."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.exposure import equalize_adapthist
from skimage.exposure._adapthist import clip_histogram

from cxrgen.data import cache
from cxrgen.images import clahe, png
from cxrgen.images import preprocess as preprocessing
from cxrgen.images.preprocess import decode, preprocess
from cxrgen.study.config import PreprocessConfig, load_study

ROOT = Path(__file__).resolve().parents[2]


def _phantom(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An 8-bit chest-like image: two dark lungs in a bright body, noise, a burnt-in bright label."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    lungs = np.exp(-(((x - 0.32) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(
        -(((x - 0.68) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)
    )
    body = 200 - 120 * lungs + rng.normal(0, 6, (height, width))
    body[: height // 12, : width // 6] = 255
    return np.clip(body, 0, 255).astype(np.uint8)


def _assert_within_one_level(path: Path, size: int = 224) -> None:
    reference = preprocess(path, size, "skimage").astype(np.int16)
    fast = preprocess(path, size, "exact").astype(np.int16)
    assert fast.shape == reference.shape == (size, size)
    assert np.abs(fast - reference).max() <= 1, path


@pytest.mark.parametrize(
    "shape", [(390, 320), (100, 77), (64, 50), (17, 9), (7, 5), (1, 9), (9, 1), (1, 1), (513, 1023)]
)
def test_clahe_is_bit_equal_to_skimage_on_any_shape(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    image = (rng.random(shape, dtype=np.float32) ** 3).astype(np.float32)
    np.testing.assert_array_equal(clahe.equalize_adapthist(image), equalize_adapthist(image).astype(np.float32))


def test_clahe_is_bit_equal_on_constant_few_level_and_float64_images() -> None:
    for image in (
        np.zeros((40, 30), np.float32),
        np.full((40, 30), 0.7, np.float32),
        np.kron(np.eye(4), np.ones((10, 10))).astype(np.float32) * 0.5,  # two levels: heavy clipping
        np.random.default_rng(1).random((50, 44)),  # float64: img_as_uint computes in float64
    ):
        expected = equalize_adapthist(image).astype(np.float32)
        np.testing.assert_array_equal(clahe.equalize_adapthist(image), expected)


def test_clip_histogram_matches_skimage_including_the_redistribution_loop() -> None:
    rng = np.random.default_rng(2)
    for trial in range(300):
        nbins = int(rng.integers(2, 300))
        hist = rng.integers(0, 50, nbins) * (rng.random(nbins) < rng.random())
        hist[rng.integers(0, nbins, 3)] += rng.integers(0, 4000, 3)
        limit = int(rng.integers(1, 60))
        mine = hist.astype(np.int64).copy()
        clahe._clip_histogram(mine, limit)
        np.testing.assert_array_equal(mine, clip_histogram(hist.astype(np.int64).copy(), limit), err_msg=str(trial))


def test_clahe_refuses_what_skimage_refuses() -> None:
    with pytest.raises(ValueError, match="between -1 and 1"):
        clahe.equalize_adapthist(np.full((8, 8), 2.0, np.float32))
    with pytest.raises(ValueError, match="2-D gray"):
        clahe.equalize_adapthist(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="float image"):
        clahe.equalize_adapthist(np.zeros((8, 8), np.uint8))


@pytest.mark.slow
def test_exact_engine_within_one_level_on_synthetic_chexpert_jpegs(tmp_path: Path) -> None:
    # CheXpert-small (320 wide, 390 high) and full-size (2320 x 2828) JPEG shapes.
    for name, (width, height) in {"small": (320, 390), "full": (2320, 2828)}.items():
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(_phantom(height, width)).save(path, quality=90)
        _assert_within_one_level(path)


@pytest.mark.slow
def test_exact_engine_within_one_level_on_real_images(realdata: Path) -> None:
    # A sample (skimage takes ~0.4 s per NIH image); benchmarks/clahe_exactness.py covers every real image.
    nih = sorted((realdata / "nih" / "images_1024").glob("*.png"))
    rgba = [p for p in nih if p.stem in {"00001369_000", "00002578_000", "00005224_000"}]
    assert len(rgba) == 3 and all(Image.open(p).mode == "RGBA" for p in rgba)
    hannover = sorted((realdata / "hannover" / "png").rglob("*.png"))
    small = sorted((realdata / "nih" / "images_512").glob("*.png"))
    assert len(nih) == 110 and len(hannover) == 243 and len(small) == 2
    for path in rgba + nih[::40] + hannover[::60] + small:
        _assert_within_one_level(path)


def test_exact_is_the_default_engine_and_the_demo_uses_it() -> None:
    assert PreprocessConfig().engine == "exact"
    assert load_study(ROOT / "configs" / "demo.yaml").preprocess.engine == "exact"


def _worker_threads() -> tuple[int, int, list[int], int, int, int]:
    import numba
    import torch  # loaded after the pool started, as by the torch engine's first chunk
    from threadpoolctl import threadpool_info

    blas = [pool["num_threads"] for pool in threadpool_info()]
    clahe.equalize_adapthist(_phantom(90, 70).astype(np.float32) / np.float32(255))
    clahe.equalize_gray8(_phantom(90, 70))  # 8-bit pixels: the same kernels
    png._unfilter(np.zeros(4, np.uint8), np.empty((1, 3), np.uint8))  # what decoding a PNG runs
    kernels = [clahe._lookup_bins, clahe._tile_mappings, clahe._interpolate, clahe._gather, png._unfilter]
    hits = sum(sum(kernel.stats.cache_hits.values()) for kernel in kernels)
    misses = sum(sum(kernel.stats.cache_misses.values()) for kernel in kernels)
    return cv2.getNumThreads(), numba.get_num_threads(), blas, torch.get_num_threads(), hits, misses


def test_cache_workers_run_one_thread_each_and_load_the_kernels_compiled_ahead() -> None:
    preprocessing.compile_ahead()  # what the cache builder does before it starts its workers
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=cache._single_thread_opencv) as pool:
        opencv, numba_threads, blas, torch_threads, hits, misses = pool.submit(_worker_threads).result(timeout=120)
    assert (opencv, numba_threads, torch_threads) == (1, 1, 1)
    assert blas and all(n == 1 for n in blas)
    assert (hits, misses) == (5, 0)  # every kernel loaded from numba's disk cache, none compiled in the worker


def test_without_a_writable_numba_cache_the_kernels_still_import() -> None:
    # No cache locator applies (as a read-only install with a read-only home): numba refuses cache=True.
    code = "import cxrgen.images.clahe as c; print(type(c._interpolate).__name__)"
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "IPythonCacheLocator"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "CPUDispatcher"
    assert "numba cannot cache" in done.stderr and "NUMBA_CACHE_DIR" in done.stderr


def test_exact_engine_decodes_like_the_others(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(_phantom(120, 100)).save(path)
    equalized = clahe.equalize_adapthist(decode(path))
    np.testing.assert_array_equal(equalized, equalize_adapthist(decode(path)).astype(np.float32))
    _assert_within_one_level(path, 64)


def test_default_engine_cache_names_exact_and_matches_skimage(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    rows = []
    for i in range(5):
        Image.fromarray(_phantom(90 + i, 70, seed=i)).save(tmp_path / "data" / f"{i}.png")
        rows.append({"image_id": f"ds:{i}", "path": f"{i}.png"})
    engine = PreprocessConfig().engine
    folder = cache.build_cache(
        pd.DataFrame(rows), tmp_path / "data", tmp_path / "study", "ds", 32, engine, True, workers=2, chunk_size=2
    )
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["engine"], meta["complete"], meta["failed"]) == ("exact", True, 0)
    assert meta["library"].startswith("exact numba ")
    stored, index = cache.open_cache(tmp_path / "study", "ds", 32, "exact", True)
    for row in index.itertuples():
        reference = preprocess(tmp_path / "data" / row.path, 32, "skimage").astype(np.int16)
        assert np.abs(stored[row.row].astype(np.int16) - reference).max() <= 1
