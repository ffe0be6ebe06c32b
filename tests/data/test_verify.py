"""The verify stage: every image decoded once, failures listed with their reason, test-set losses counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrgen.data import verify
from cxrgen.errors import CxrgenError


def _dataset(root: Path, name: str, n: int, broken: dict[int, bytes | None]) -> pd.DataFrame:
    """n small gradient PNGs under root/img/; index -> bytes to write instead (None: no file at all)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rel = f"img/{i:03d}.png"
        if i in broken:
            content = broken[i]
            if content is not None:
                (root / rel).write_bytes(content)
        else:
            # Large enough and not constant: degenerate images are excluded (tests/faults/test_hostile.py).
            Image.fromarray(((np.arange(40 * 36).reshape(40, 36) + i) % 256).astype(np.uint8)).save(root / rel)
        rows.append({"dataset": name, "image_id": f"{name}:{i:03d}", "path": rel})
    return pd.DataFrame(rows)


@pytest.fixture()
def study(tmp_path: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    a = _dataset(tmp_path / "a", "a", 6, {1: b"", 4: None})
    b = _dataset(tmp_path / "b", "b", 5, {2: b"GIF89a-not-really"})
    return pd.concat([a, b], ignore_index=True), {"a": tmp_path / "a", "b": tmp_path / "b"}


def test_verify_lists_failures_with_reasons(tmp_path: Path, study: tuple[pd.DataFrame, dict[str, Path]]) -> None:
    manifest, roots = study
    seen: list[tuple[int, int]] = []
    excluded = verify.verify_manifest(manifest, roots, tmp_path, workers=1, progress=lambda d, t: seen.append((d, t)))
    assert list(excluded.columns) == ["dataset", "image_id", "path", "reason"]
    assert excluded["image_id"].tolist() == ["a:001", "a:004", "b:002"]
    reasons = dict(zip(excluded["image_id"], excluded["reason"], strict=True))
    assert reasons["a:001"].startswith("empty file")
    assert reasons["a:004"] == "missing file"
    assert reasons["b:002"].startswith("not a PNG or JPEG")
    on_disk = verify.read_excluded(tmp_path)
    pd.testing.assert_frame_equal(on_disk, excluded.astype(str))
    assert seen[-1] == (11, 11)
    assert not list(tmp_path.glob(".excluded.csv.*"))  # the temporary file was renamed, not left behind


def test_verify_in_parallel_equals_serial(
    tmp_path: Path, study: tuple[pd.DataFrame, dict[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest, roots = study
    monkeypatch.setattr(verify, "CHUNK", 3)  # several chunks over 2 processes
    serial = verify.verify_manifest(manifest, roots, tmp_path / "s", workers=1)
    parallel = verify.verify_manifest(manifest, roots, tmp_path / "p", workers=2)
    pd.testing.assert_frame_equal(serial, parallel)


def test_verify_with_no_failures_writes_an_empty_file(tmp_path: Path) -> None:
    manifest = _dataset(tmp_path / "a", "a", 3, {})
    excluded = verify.verify_manifest(manifest, {"a": tmp_path / "a"}, tmp_path, workers=1)
    assert excluded.empty
    assert verify.read_excluded(tmp_path).empty


def test_verify_needs_every_root(tmp_path: Path, study: tuple[pd.DataFrame, dict[str, Path]]) -> None:
    manifest, roots = study
    with pytest.raises(CxrgenError, match="no root folder"):
        verify.verify_manifest(manifest, {"a": roots["a"]}, tmp_path, workers=1)


def test_read_excluded_before_verify_fails(tmp_path: Path) -> None:
    with pytest.raises(CxrgenError, match="run `cxrgen prepare --until verify`"):
        verify.read_excluded(tmp_path)


def test_excluded_test_counts(study: tuple[pd.DataFrame, dict[str, Path]], tmp_path: Path) -> None:
    manifest, roots = study
    excluded = verify.verify_manifest(manifest, roots, tmp_path, workers=1)
    split = {"a:001": "test", "a:004": "train", "b:002": "test", "a:000": "test", "b:000": "val"}
    splits = manifest.assign(split=manifest["image_id"].map(split).fillna("train"))
    counts = verify.excluded_test_counts(excluded, splits).set_index("dataset")
    assert counts.loc["a"].tolist() == [2, 1, 1]  # images, excluded, kept
    assert counts.loc["b"].tolist() == [1, 1, 0]


def _hostile(root: Path) -> pd.DataFrame:
    """Dataset ``a`` with every kind of image verify excludes, and one it keeps whose decode fails nowhere."""
    good = Image.fromarray((np.arange(40 * 36).reshape(40, 36) % 256).astype(np.uint8))
    png = root / "good.png"
    root.mkdir(parents=True)
    good.save(png)
    broken = {
        1: b"",  # empty
        2: None,  # missing
        3: png.read_bytes()[:60],  # truncated
        4: b"GIF89a-not-really",  # not an image
        8: None,  # a directory, made below
    }
    rows = _dataset(root, "a", 10, broken)
    png.unlink()
    Image.fromarray(np.full((40, 36), 7, dtype=np.uint8)).save(root / "img/005.png")  # one gray value
    Image.fromarray(np.arange(20 * 20, dtype=np.uint8).reshape(20, 20)).save(root / "img/006.png")  # too small
    Image.fromarray((np.arange(60 * 60) % 251).astype(np.uint8).reshape(60, 60)).save(root / "img/007.png")  # > cap
    (root / "img/008.png").mkdir()  # a directory
    return rows


@pytest.mark.parametrize("workers", [1, 2])
def test_cache_build_checks_what_verify_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    from cxrgen.data import cache

    rows = _hostile(tmp_path / "a")
    other = _dataset(tmp_path / "b", "b", 3, {1: b""})  # a dataset no cache covers: verify decodes it
    manifest, roots = pd.concat([rows, other], ignore_index=True), {"a": tmp_path / "a", "b": tmp_path / "b"}
    cap = 3000  # 40 x 36 passes, 60 x 60 does not
    alone = verify.verify_manifest(manifest, roots, tmp_path / "alone", workers=1, max_pixels=cap)
    assert set(alone["image_id"]) == {f"a:00{i}" for i in range(1, 9)} | {"b:001"}
    monkeypatch.setattr(cache, "CHUNK", 4)  # several chunks, over 2 processes with workers=2
    checked = verify.Verified(cap)
    fused = cache.build_cache(rows, roots["a"], tmp_path / "fused", "a", 16, "exact", True, workers, verified=checked)
    plain = cache.build_cache(rows, roots["a"], tmp_path / "plain", "a", 16, "exact", True, workers)
    assert (fused / cache.IMAGES).read_bytes() == (plain / cache.IMAGES).read_bytes()  # the cache's bytes stay
    pd.testing.assert_frame_equal(pd.read_parquet(fused / cache.INDEX), pd.read_parquet(plain / cache.INDEX))
    assert checked.checked == {"a": set(rows["image_id"])}
    decoded: list[str] = []
    real = verify.decode
    monkeypatch.setattr(verify, "decode", lambda path, bits=None: decoded.append(str(path)) or real(path, bits))
    together = verify.verify_manifest(manifest, roots, tmp_path / "together", workers=1, max_pixels=cap,
                                      verified=checked)  # fmt: skip
    pd.testing.assert_frame_equal(together, alone)
    assert decoded == [str(roots["b"] / p) for p in other["path"]]  # only the images no cache build read


def test_checks_made_at_another_cap_are_not_used(tmp_path: Path) -> None:
    from cxrgen.data import cache

    rows = _hostile(tmp_path / "a")
    checked = verify.Verified(10**6)
    cache.build_cache(rows, tmp_path / "a", tmp_path, "a", 16, "exact", True, 1, verified=checked)
    excluded = verify.verify_manifest(rows, {"a": tmp_path / "a"}, tmp_path, workers=1, max_pixels=3000,
                                      verified=checked)  # fmt: skip
    assert "a:007" in set(excluded["image_id"])  # the 60 x 60 image, over this cap
