"""The preprocessed cache: content, fingerprint skip/rebuild, resume after a real SIGKILL, shards, real images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.exposure import equalize_adapthist
from skimage.transform import resize

from cxrgen.data import cache
from cxrgen.images.preprocess import Engine, preprocess
from cxrgen.runner import prepare
from cxrgen.study.config import StudyConfig
from cxrgen.study.workspace import Study

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


def _write_images(root: Path, n: int, side: int = 48, broken: tuple[int, ...] = ()) -> pd.DataFrame:
    """n noisy gradient PNGs under root/imgs/ (index in ``broken``: a truncated file); manifest-like rows."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    rows = []
    for i in range(n):
        rel = f"imgs/{i:04d}.png"
        ramp = np.linspace(0, 200, side)[None, :] + np.linspace(0, 50, side + i % 5)[:, None]
        pixels = np.clip(ramp + rng.normal(0, 20, ramp.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / rel)
        if i in broken:
            (root / rel).write_bytes((root / rel).read_bytes()[:60])
        rows.append({"image_id": f"ds:{i:04d}", "path": rel})
    # manifest order is not image_id order: the cache sorts
    return pd.DataFrame(rows).iloc[::-1].reset_index(drop=True)


def test_cache_content_index_and_meta(tmp_path: Path) -> None:
    rows = _write_images(tmp_path / "data", 11, broken=(3,))
    calls: list[tuple[int, int]] = []
    folder = cache.build_cache(
        rows, tmp_path / "data", tmp_path / "study", "ds", 32, "opencv", True, workers=1,
        progress=lambda d, t: calls.append((d, t)), chunk_size=4,
    )  # fmt: skip
    assert folder == tmp_path / "study" / "cache" / "ds-32-opencv"
    images, index = cache.open_cache(tmp_path / "study", "ds", 32, "opencv", True)
    assert images.shape == (11, 32, 32) and images.dtype == np.uint8
    assert index["image_id"].tolist() == sorted(rows["image_id"])
    assert index["row"].tolist() == list(range(11))
    bad = index.set_index("image_id").loc["ds:0003"]
    assert not bad["ok"] and "truncated" in bad["reason"]
    assert not images[bad["row"]].any()
    for row in index.loc[index["ok"]].itertuples():
        np.testing.assert_array_equal(images[row.row], preprocess(tmp_path / "data" / row.path, 32, "opencv"))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["complete"] and meta["count"] == 11 and meta["failed"] == 1
    assert (meta["dataset"], meta["size"], meta["engine"], meta["clahe"]) == ("ds", 32, "opencv", True)
    assert calls[0] == (0, 11) and calls[-1] == (11, 11)
    assert not (folder.parent / "ds-32-opencv.partial").exists()


def test_same_inputs_skip_and_changed_inputs_rebuild(tmp_path: Path) -> None:
    rows = _write_images(tmp_path / "data", 6)
    args: tuple[pd.DataFrame, Path, Path, str, int, Engine, bool]
    args = (rows, tmp_path / "data", tmp_path / "study", "ds", 24, "opencv", True)
    folder = cache.build_cache(*args, workers=1)
    before = (folder / "images.npy").stat().st_mtime_ns
    fingerprint = json.loads((folder / "meta.json").read_text())["fingerprint"]
    assert cache.build_cache(*args, workers=1) == folder
    assert (folder / "images.npy").stat().st_mtime_ns == before  # skipped: nothing rewritten

    # a changed file (new size and mtime) changes the fingerprint: rebuilt, with the new pixels
    changed = tmp_path / "data" / "imgs" / "0002.png"
    Image.fromarray(np.full((40, 40), 255, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.build_cache(*args, workers=1) == folder
    assert json.loads((folder / "meta.json").read_text())["fingerprint"] != fingerprint
    images, _ = cache.open_cache(tmp_path / "study", "ds", 24, "opencv", True)
    np.testing.assert_array_equal(images[2], preprocess(changed, 24, "opencv"))

    # other parameters are another cache, beside this one
    assert cache.build_cache(*args[:-1], clahe=False, workers=1).name == "ds-24-opencv-noclahe"
    assert cache.fingerprint(["a"], ["x"], tmp_path, cache.parameters("ds", 24, "opencv", True)) != cache.fingerprint(
        ["a"], ["x"], tmp_path, cache.parameters("ds", 24, "skimage", True)
    )


def test_parallel_build_equals_serial(tmp_path: Path) -> None:
    rows = _write_images(tmp_path / "data", 13, broken=(5,))
    serial = cache.build_cache(rows, tmp_path / "data", tmp_path / "s", "ds", 32, "skimage", True, 1, chunk_size=3)
    parallel = cache.build_cache(rows, tmp_path / "data", tmp_path / "p", "ds", 32, "skimage", True, 2, chunk_size=3)
    assert (serial / "images.npy").read_bytes() == (parallel / "images.npy").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(serial / "index.parquet"), pd.read_parquet(parallel / "index.parquet")
    )


def test_shards_merge_into_the_single_build(tmp_path: Path) -> None:
    rows = _write_images(tmp_path / "data", 10, broken=(7,))
    data, study = tmp_path / "data", tmp_path / "study"
    single = cache.build_cache(rows, data, tmp_path / "single", "ds", 32, "opencv", True, 1, chunk_size=2)
    first = cache.build_cache(rows, data, study, "ds", 32, "opencv", True, 1, shard=(1, 2), chunk_size=2)
    assert first.name == "ds-32-opencv.partial"  # shard 2/2 has not run: not published
    with pytest.raises(cache.CacheError, match="no finished cache"):
        cache.open_cache(study, "ds", 32, "opencv", True)
    second = cache.build_cache(rows, data, study, "ds", 32, "opencv", True, 1, shard=(2, 2), chunk_size=2)
    assert second == study / "cache" / "ds-32-opencv"
    assert (second / "images.npy").read_bytes() == (single / "images.npy").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(second / "index.parquet"), pd.read_parquet(single / "index.parquet"))
    logs = {p.name: p.read_text().splitlines() for p in second.glob("progress-*.jsonl")}
    chunks = {name: sorted(json.loads(line)["chunk"] for line in lines) for name, lines in logs.items()}
    assert chunks == {"progress-1of2.jsonl": [0, 2, 4], "progress-2of2.jsonl": [1, 3]}


def test_resume_after_sigkill_skips_finished_chunks(tmp_path: Path) -> None:
    rows = _write_images(tmp_path / "data", 60, side=320)
    rows.to_parquet(tmp_path / "rows.parquet")
    args = f"(pd.read_parquet({str(tmp_path / 'rows.parquet')!r}), Path({str(tmp_path / 'data')!r}), "
    args += f"Path({str(tmp_path / 'killed')!r}), 'ds', 32, 'skimage', True, 1, chunk_size=2)"
    script = "import pandas as pd\nfrom pathlib import Path\nfrom cxrgen.data.cache import build_cache\n"
    script += f"build_cache{args}\n"
    partial = tmp_path / "killed" / "cache" / "ds-32-skimage.partial"
    log = partial / "progress-1of1.jsonl"
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 45
        while not (log.exists() and len(log.read_text().splitlines()) >= 3):
            assert child.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "no chunk finished in time"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_chunks = {json.loads(line)["chunk"] for line in log.read_text().splitlines() if line.strip()}
    assert killed_chunks and len(killed_chunks) < 30 and partial.is_dir()

    resumed = cache.build_cache(rows, tmp_path / "data", tmp_path / "killed", "ds", 32, "skimage", True, 1)
    records = [json.loads(line) for line in (resumed / "progress-1of1.jsonl").read_text().splitlines() if line]
    redone = [r["chunk"] for r in records if r["pid"] == os.getpid()]
    assert not set(redone) & killed_chunks  # finished chunks were not redone
    assert sorted(r["chunk"] for r in records) == list(range(30))  # every chunk exactly once
    reference = cache.build_cache(rows, tmp_path / "data", tmp_path / "whole", "ds", 32, "skimage", True, 2)
    assert (resumed / "images.npy").read_bytes() == (reference / "images.npy").read_bytes()


def test_ensure_caches_builds_each_used_dataset_at_each_size(tmp_path: Path) -> None:
    frames = []
    for name in ("one", "two", "unused"):
        rows = _write_images(tmp_path / name, 3)
        frames.append(rows.assign(dataset=name, image_id=name + ":" + rows["image_id"]))
    config = StudyConfig.model_validate(
        {
            "name": "t",
            "out": str(tmp_path / "study"),
            "datasets": {n: {"reader": "nih", "root": str(tmp_path / n)} for n in ("one", "two", "unused")},
            "architectures": ["densenet121", "inception_resnet_v2"],
            "preprocess": {"engine": "opencv"},
            "configurations": [{"name": "c", "train": ["one"], "internal": ["one"], "external": ["two"]}],
        }
    )
    seen: set[str] = set()
    folders = prepare.ensure_caches(
        Study.of(config), pd.concat(frames), {"densenet121": 16, "inception_resnet_v2": 20}, workers=1,
        progress=lambda key, done, total: seen.add(key),
    )  # fmt: skip
    assert all(folder.parent == tmp_path / "study" / "cache" for folder in folders.values())
    assert sorted(folders) == [("one", 16), ("one", 20), ("two", 16), ("two", 20)]
    assert seen == {"one-16-opencv", "one-20-opencv", "two-16-opencv", "two-20-opencv"}
    assert prepare.cache_sizes(config.model_copy(update={"preprocess": config.preprocess.model_copy(
        update={"size": 64})}), {}) == [64]  # fmt: skip
    with pytest.raises(cache.CacheError, match="no input size"):
        prepare.cache_sizes(config, {"densenet121": 224})


def _real_rows(folder: Path, pattern: str) -> pd.DataFrame:
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.glob(pattern))
    return pd.DataFrame({"image_id": paths, "path": paths})


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_images_all_land_in_a_cache(tmp_path: Path) -> None:
    nih = REALDATA / "nih" / "images_1024"
    hannover = REALDATA / "hannover"
    for name, root, pattern, expected in (("nih", nih, "*.png", 110), ("hannover", hannover, "**/*.png", 243)):
        rows = _real_rows(root, pattern)
        assert len(rows) == expected
        cache.build_cache(rows, root, tmp_path, name, 64, "opencv", True, workers=2)
        images, index = cache.open_cache(tmp_path, name, 64, "opencv", True)
        assert index["ok"].all(), index.loc[~index["ok"], ["path", "reason"]]
        assert images.shape == (expected, 64, 64)
        assert (images.reshape(expected, -1).std(axis=1) > 20).all()  # real content in every row


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_images_skimage_engine_is_the_paper_recipe(tmp_path: Path) -> None:
    # the three RGBA NIH files and three Hannover images, through the cache and through the paper's two calls
    nih = REALDATA / "nih" / "images_1024"
    hannover = REALDATA / "hannover"
    picks = {
        "nih": (nih, ["00001369_000.png", "00002578_000.png", "00005224_000.png"]),
        "hannover": (hannover, _real_rows(hannover, "**/*.png")["path"].tolist()[:3]),
    }
    for name, (root, paths) in picks.items():
        rows = pd.DataFrame({"image_id": paths, "path": paths})
        cache.build_cache(rows, root, tmp_path, name, 64, "skimage", True, workers=1)
        images, index = cache.open_cache(tmp_path, name, 64, "skimage", True)
        for row in index.itertuples():
            pixels = np.asarray(Image.open(root / row.path).convert("L"))  # an independent decode
            paper = resize(equalize_adapthist(pixels), (64, 64), order=1, anti_aliasing=True, mode="constant", cval=0)
            assert np.abs(images[row.row].astype(float) - paper * 255).max() <= 1.0, row.path
