"""The torch (GPU) path run on CPU: the same CLAHE, resize and uint8 output as the ``exact`` engine, in ``prepare``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from skimage.exposure._adapthist import clip_histogram

from cxrgen.data import cache
from cxrgen.data.manifest import build_manifest
from cxrgen.images import clahe
from cxrgen.images import gpu as gpu_preprocess
from cxrgen.images import preprocess as images
from cxrgen.images.preprocess import ImageError
from cxrgen.runner import prepare
from cxrgen.study.config import PreprocessConfig, dump_resolved, load_study
from cxrgen.study.workspace import Study
from cxrgen.synthetic import write_synthetic


def _phantom(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    lungs = np.exp(-(((x - 0.3) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(
        -(((x - 0.7) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2)
    )
    body = 190 - 110 * lungs + rng.normal(0, 8, (height, width))
    body[: height // 10, : width // 5] = 255
    return np.clip(body, 0, 255).astype(np.uint8)


def test_clip_histograms_match_skimage_row_by_row() -> None:
    rng = np.random.default_rng(3)
    hist = rng.integers(0, 40, (120, 256)) * (rng.random((120, 256)) < rng.random((120, 1)))
    hist[np.arange(120), rng.integers(0, 256, 120)] += rng.integers(0, 5000, 120)
    for limit in (1, 7, 30):
        out = gpu_preprocess.clip_histograms(torch.from_numpy(hist), limit).numpy()
        expected = np.stack([clip_histogram(row.copy(), limit) for row in hist])
        np.testing.assert_array_equal(out, expected)


def test_torch_clahe_is_bit_equal_to_the_exact_engine_on_a_batch() -> None:
    rng = np.random.default_rng(4)
    batch = np.stack([rng.random((130, 97), dtype=np.float32) ** p for p in (1, 2, 5)]).astype(np.float32)
    batch[2] = 0.25  # a constant image in the batch
    out = gpu_preprocess.equalize_adapthist(torch.from_numpy(batch)).numpy()
    for got, image in zip(out, batch, strict=True):
        np.testing.assert_array_equal(got, clahe.equalize_adapthist(image))


@pytest.mark.parametrize("shape", [(48, 40), (390, 320), (700, 580)])
def test_torch_resize_equals_the_opencv_rebuild(shape: tuple[int, int]) -> None:
    image = clahe.equalize_adapthist(_phantom(*shape).astype(np.float32) / np.float32(255))
    for size in (32, 224):
        torch_out = gpu_preprocess.resize(torch.from_numpy(image)[None], size)[0].numpy()
        assert np.abs(torch_out - images.resize_opencv(image, size)).max() < 1e-4


def test_torch_jpeg_path_within_one_level_of_the_exact_engine(tmp_path: Path) -> None:
    paths = []
    for i, (height, width) in enumerate([(390, 320), (390, 320), (260, 300)]):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(_phantom(height, width, seed=i)).save(path, quality=90)
        paths.append(path)
    rgb = tmp_path / "rgb.jpg"
    Image.fromarray(np.stack([_phantom(200, 180, 9)] * 3, axis=-1)).save(rgb, quality=90)
    paths.append(rgb)
    results = dict(gpu_preprocess.preprocess_jpegs(paths, 224, device="cpu", batch_size=3))
    assert sorted(results) == [0, 1, 2, 3]
    for index, path in enumerate(paths):
        expected = images.preprocess(path, 224, "exact").astype(np.int16)
        assert results[index].dtype == np.uint8 and results[index].shape == (224, 224)
        assert np.abs(results[index].astype(np.int16) - expected).max() <= 1, path


def test_torch_jpeg_path_names_a_broken_file(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(_phantom(64, 64)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError, match=r"bad\.jpg"):
        list(gpu_preprocess.preprocess_jpegs([good, bad], 32, device="cpu"))


@pytest.mark.gpu
@pytest.mark.requires("cuda")
def test_cuda_path_within_one_level_of_the_exact_engine(tmp_path: Path) -> None:
    paths = []
    for i, (height, width) in enumerate([(390, 320), (2828, 2320)]):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(_phantom(height, width, seed=i)).save(path, quality=90)
        paths.append(path)
    for path in paths:
        decoded = images.decode(path)
        expected = images.preprocess_array(decoded, 224, "exact").astype(np.int16)
        on_device = gpu_preprocess.preprocess_batch(torch.from_numpy(decoded)[None].cuda(), 224)[0].cpu().numpy()
        assert np.abs(on_device.astype(np.int16) - expected).max() <= 1, path
        # End to end, nvJPEG may decode a level apart from libjpeg-turbo: one more level allowed.
        ((_, end_to_end),) = gpu_preprocess.preprocess_jpegs([path], 224, device="cuda")
        assert np.abs(end_to_end.astype(np.int16) - expected).max() <= 2, path


@pytest.mark.gpu
@pytest.mark.requires("cuda")
def test_cuda_cache_with_two_workers_within_two_levels_of_the_exact_engine(tmp_path: Path) -> None:
    rows = []
    for i, shape in enumerate([(390, 320)] * 5 + [(260, 300)] * 3):
        Image.fromarray(_phantom(*shape, seed=i)).save(tmp_path / f"{i}.jpg", quality=90)
        rows.append({"image_id": f"ds:{i}", "path": f"{i}.jpg"})
    Image.fromarray(_phantom(200, 180)).save(tmp_path / "8.png")
    rows.append({"image_id": "ds:8", "path": "8.png"})
    folder = cache.build_cache(
        pd.DataFrame(rows), tmp_path, tmp_path / "study", "ds", 224, "torch", True, workers=2, chunk_size=3,
        device="cuda",
    )  # fmt: skip
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["device"], meta["cpu_fallback"], meta["failed"]) == ("cuda", 1, 0)
    stored, index = cache.open_cache(tmp_path / "study", "ds", 224, "torch", True)
    for row in index.itertuples():
        expected = images.preprocess(tmp_path / row.path, 224, "exact").astype(np.int16)
        assert np.abs(stored[row.row].astype(np.int16) - expected).max() <= 2, row.path


def test_preprocess_paths_leaves_what_it_cannot_batch_to_the_cpu_engine(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(_phantom(120, 100)).save(good, quality=90)
    png = tmp_path / "x.png"
    Image.fromarray(_phantom(120, 100)).save(png)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(np.stack([_phantom(80, 60)] * 3, axis=-1)).convert("CMYK").save(cmyk)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:400])  # the header parses, the scan is gone
    paths = [png, good, tmp_path / "missing.jpg", cmyk, cut, good]
    done, refused = gpu_preprocess.preprocess_paths(paths, 32, "cpu", clahe=False)  # one batch: cut.jpg fails it
    assert sorted(done) == [1, 5] and refused == [0, 2, 3, 4]
    expected = images.preprocess(good, 32, "exact", clahe=False)
    assert np.abs(done[1].astype(np.int16) - expected).max() <= 1
    np.testing.assert_array_equal(done[1], done[5])


def test_batches_respect_the_image_count_and_the_pixel_budget() -> None:
    pixels = {0: 10, 2: 10, 3: 30, 5: 5, 6: 5, 7: 5}
    assert list(gpu_preprocess._batches(pixels, 2, 25)) == [[0, 2], [3], [5, 6], [7]]
    assert list(gpu_preprocess._batches(pixels, 16, 1000)) == [[0, 2, 3, 5, 6, 7]]


def test_study_caches_with_engine_torch_on_cpu_match_the_exact_engine(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "data", scale=0.03, image_size=96)
    study = data / "study.yaml"
    text, replaced = re.subn(
        r"preprocess: \{[^}]*\}", "preprocess: {clahe: true, engine: torch, device: cpu, size: 32}", study.read_text()
    )
    assert replaced == 1
    study.write_text(text)
    opened = Study.load(study)
    manifest = build_manifest(opened.config)
    # prepare's cache step, from the study file (preprocess.size spares the model registry's imports).
    folders = prepare.ensure_caches(opened, manifest, {}, workers=1)
    for dataset, jpeg in (("chexpert", True), ("nih", False), ("mimic", True)):
        assert folders[(dataset, 32)].name == f"{dataset}-32-torch"
        meta = json.loads((folders[(dataset, 32)] / "meta.json").read_text())
        rows = manifest.loc[manifest["dataset"] == dataset]
        assert (meta["engine"], meta["device"], meta["count"], meta["failed"]) == ("torch", "cpu", len(rows), 0)
        assert meta["cpu_fallback"] == (0 if jpeg else len(rows))  # NIH's PNGs go through the exact engine
        assert " on cpu; " in meta["library"]
        stored, index = cache.open_cache(opened.dir.path, dataset, 32, "torch", True)
        root = opened.config.datasets[dataset].root
        for row in index.itertuples():
            expected = images.preprocess(root / row.path, 32, "exact").astype(np.int16)
            assert np.abs(stored[row.row].astype(np.int16) - expected).max() <= 1, row.path


def test_device_round_trips_and_leaves_older_run_fingerprints_alone(tmp_path: Path) -> None:
    study = write_synthetic(tmp_path / "data", scale=0.01, image_size=48) / "study.yaml"
    config = load_study(study)
    # training.py hashes this dump into every run's fingerprint: the default adds no key.
    assert config.preprocess.model_dump(mode="json") == {"clahe": True, "engine": "opencv", "size": 80}
    cuda = config.model_copy(update={"preprocess": PreprocessConfig(engine="torch", device="cuda", size=64)})
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(dump_resolved(cuda))
    assert load_study(resolved).preprocess == cuda.preprocess


def test_a_cuda_cache_without_cuda_is_refused_naming_the_setting(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = tmp_path / "a.jpg"
    Image.fromarray(_phantom(64, 64)).save(path)
    rows = pd.DataFrame({"image_id": ["a"], "path": ["a.jpg"]})
    with pytest.raises(cache.CacheError, match=r"preprocess\.device: cuda, but torch .* finds no CUDA device"):
        cache.build_cache(rows, tmp_path, tmp_path / "study", "ds", 32, "torch", True, workers=1, device="cuda")
    assert not (tmp_path / "study" / "cache" / "ds-32-torch.partial").exists()
    with pytest.raises(ValidationError, match=r"preprocess\.device: cuda needs engine: torch"):
        PreprocessConfig(engine="exact", device="cuda")
    assert cache.parameters("ds", 32, "torch", True, "cpu") != cache.parameters("ds", 32, "torch", True, "cuda")
    assert "device" not in cache.parameters("ds", 32, "exact", True)  # other engines' fingerprints unchanged
