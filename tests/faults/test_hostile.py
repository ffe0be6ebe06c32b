"""Issue 14, hostile or broken images and names: pixel bombs below Pillow's limit, degenerate images,
directories, FIFOs and unreadable files where an image should be, symbolic links leaving a dataset root, and
``$...$`` in a predictions file name. Each is met through the real ``cxrgen`` command where a user would meet it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers.faults import cxrgen
from helpers.report_study import make_study


def flat(text: str) -> str:
    return " ".join(text.split())


def train_images(data: Path, dataset: str, n: int) -> list[tuple[str, Path]]:
    """The first ``n`` training images of a dataset: (image_id, file)."""
    from cxrgen.runner.prepare import run_prepare
    from cxrgen.study.workspace import Study

    study = Study.load(data / "study.yaml")
    splits = run_prepare(study, until="splits").splits
    assert splits is not None
    manifest = pd.read_parquet(study.dir.manifest).merge(splits[["image_id", "split"]], on="image_id")
    rows = manifest[(manifest["dataset"] == dataset) & (manifest["split"] == "train")].head(n)
    root = study.config.datasets[dataset].root
    return [(str(r.image_id), root / str(r.path)) for r in rows.itertuples()]


def jpeg_declaring(side: int) -> bytes:
    """A tiny JPEG whose frame header (SOF0) declares side x side pixels."""
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buffer, format="JPEG", quality=50)
    raw = bytearray(buffer.getvalue())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2  # height, width
    return bytes(raw)


def verify(data: Path) -> tuple[subprocess.CompletedProcess[str], pd.DataFrame]:
    result = cxrgen("prepare", "study.yaml", "--until", "verify", "--workers", "1", cwd=data, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, pd.read_csv(data / "runs/tiny/excluded.csv").set_index("image_id")


def test_hostile_and_degenerate_images_are_excluded_with_what_they_are(data: Path) -> None:
    picked = train_images(data, "chexpert", 4) + train_images(data, "nih", 3)
    bomb = jpeg_declaring(12_000)
    assert len(bomb) < 1000
    picked[0][1].write_bytes(bomb)
    Image.new("L", (1, 1), 128).save(picked[1][1].with_suffix(".png"), format="PNG")
    picked[1][1].with_suffix(".png").replace(picked[1][1])  # a 1x1 image under the .jpg name (PNG inside)
    Image.new("L", (64, 64), 0).save(picked[2][1], format="JPEG")  # constant black
    picked[3][1].unlink()
    picked[3][1].mkdir()  # a directory where an image should be
    Image.new("L", (64, 64), 255).save(picked[4][1], format="PNG")  # constant white
    picked[5][1].unlink()
    os.mkfifo(picked[5][1])  # a FIFO: opening it for reading would wait for a writer forever
    kept = picked[6]
    _, excluded = verify(data)
    expected = {
        picked[0][0]: "too many pixels: 12000 x 12000 = 144,000,000 declared, the limit is 40,000,000",
        picked[1][0]: "degenerate image: 1 x 1 pixels, fewer than 32 on a side",
        picked[2][0]: "degenerate image: every pixel has the value 0",
        picked[3][0]: "a directory, not an image file",
        picked[4][0]: "degenerate image: every pixel has the value 1",
        picked[5][0]: "not a regular file (a FIFO)",
    }
    assert excluded["reason"].to_dict() == expected
    assert kept[0] not in excluded.index


def test_pixel_limit_is_a_study_setting(data: Path) -> None:
    (image_id, path), *_ = train_images(data, "nih", 1)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 90), dtype=np.uint8)).save(path, format="PNG")
    study = yaml.safe_load((data / "study.yaml").read_text())
    study["verify"] = {"max_pixels": 5000}  # 64 x 64 = 4096 pass, 90 x 100 = 9000 do not
    (data / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    _, excluded = verify(data)
    assert excluded["reason"].to_dict() == {image_id: "too many pixels: 90 x 100 = 9,000 declared, the limit is 5,000"}
    study["verify"] = {"max_pixels": 10_000}  # raised: verified again, and accepted
    (data / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    _, excluded = verify(data)
    assert excluded.empty


def test_unreadable_file_is_reported_as_unreadable(data: Path) -> None:
    """A link to ``/proc/self/mem`` is a regular file whose first byte cannot be read (EIO), even for root; as
    another user a mode-000 file is refused too (root reads any file, so that half needs a non-root account)."""
    if not Path("/proc/self/mem").exists():
        pytest.skip("no /proc/self/mem on this system: no file that stats as regular but cannot be read")
    picked = train_images(data, "nih", 2)
    picked[0][1].unlink()
    picked[0][1].symlink_to("/proc/self/mem")
    expected = {picked[0][0]: "unreadable file (Input/output error)"}
    if os.geteuid() != 0:
        picked[1][1].chmod(0o000)
        expected[picked[1][0]] = "unreadable file (Permission denied)"
    else:
        print("running as root: the mode-000 half is not checked (root reads any file)")
    _, excluded = verify(data)
    assert excluded["reason"].to_dict() == expected


def test_symbolic_links_leaving_the_root_are_followed_and_counted(data: Path, tmp_path: Path) -> None:
    picked = train_images(data, "chexpert", 3)
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    for k, (_, path) in enumerate(picked[:2]):
        target = elsewhere / f"{k}.jpg"
        shutil.move(path, target)
        path.symlink_to(target)
    inside = picked[2][1]
    moved = inside.with_name("moved.jpg")
    shutil.move(inside, moved)
    inside.symlink_to(moved)  # a link inside the root is not counted
    result, excluded = verify(data)
    assert excluded.empty
    total = len(pd.read_parquet(data / "runs/tiny/manifest.parquet"))
    assert re.search(
        rf"verify: 2 of {total} image path\(s\) are symbolic links to files outside their dataset root; followed",
        flat(result.stderr),
    ), result.stderr


def test_dollar_signs_in_a_predictions_file_name_are_drawn_literally(tmp_path: Path) -> None:
    study = make_study(tmp_path, archs=("densenet121",), patients=20, reference=False)
    predictions = study / "runs/alpha/densenet121/predictions"
    shutil.copy(predictions / "gamma.parquet", predictions / r"$\undefinedcommand{x$.parquet")
    result = cxrgen("report", study, "--no-review", cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert r"$\undefinedcommand{x$" in (study / "results/auc.csv").read_text()
    assert (study / "results/report.html").is_file()
