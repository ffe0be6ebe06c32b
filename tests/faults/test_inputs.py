"""Issue 8, bad input: broken images, bad tables, unsafe paths and names, bad study files, hostile or damaged
checkpoints and failing writes, each through the real ``cxrgen`` command where a user would meet it.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from cxrgen.data.manifest import build_manifest
from cxrgen.learn.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from cxrgen.study.config import load_study
from helpers.faults import (
    ARCH,
    ENV,
    WritesAFile,
    cxrgen,
    one_error,
    png_16bit,
    png_bomb,
    png_palette,
    truncated,
)

CHEX_CSV = Path("chexpert/CheXpert-v1.0-small/train.csv")
NIH_CSV = Path("nih/Data_Entry_2017_v2020.csv")
MIMIC_SPLIT = Path("mimic/mimic-cxr-2.0.0-split.csv.gz")


# ------------------------------------------------------------------------------------------------- images


def test_broken_images_are_excluded_with_reasons_and_test_losses_reported(data: Path) -> None:
    from cxrgen.data.loaders import CXRDataModule
    from cxrgen.runner.prepare import run_prepare
    from cxrgen.study.workspace import Study

    study = Study.load(data / "study.yaml")
    splits = run_prepare(study, until="splits").splits
    assert splits is not None
    manifest = pd.read_parquet(study.dir.manifest).merge(splits[["image_id", "split"]], on="image_id")

    def pick(dataset: str, split: str, n: int) -> list[Path]:
        rows = manifest[(manifest["dataset"] == dataset) & (manifest["split"] == split)].head(n)
        return [study.config.datasets[dataset].root / p for p in rows["path"]]

    def text(path: Path) -> None:
        path.write_text("Path,Sex\nthis is a CSV, not a radiograph\n")

    def empty(path: Path) -> None:
        path.write_bytes(b"")

    faults = {  # what breaks each file -> the reason excluded.csv must give (None: must be accepted)
        "truncated JPEG": (truncated, "truncated or corrupt"),
        "text named .jpg": (text, "not a PNG or JPEG image"),
        "zero bytes": (empty, "empty file"),
        "truncated PNG": (truncated, "truncated or corrupt"),
        "decompression bomb": (png_bomb, "decompression bomb"),
        "16-bit PNG": (png_16bit, None),
        "palette PNG": (png_palette, None),
    }  # a file not on disk is no fault of the image: it is left out of the manifest (tests/sources/test_table_reader)
    plan = {  # (dataset, split) -> the faults applied to its first images
        ("chexpert", "train"): ["truncated JPEG", "text named .jpg", "zero bytes"],
        ("chexpert", "test"): ["truncated JPEG", "zero bytes"],
        ("nih", "train"): ["truncated PNG", "decompression bomb", "16-bit PNG", "palette PNG", "zero bytes"],
        ("nih", "test"): ["decompression bomb", "16-bit PNG", "palette PNG"],
        ("mimic", "test"): ["text named .jpg", "truncated JPEG"],
    }
    expected: dict[str, str | None] = {}
    for (dataset, split), names in plan.items():
        for path, name in zip(pick(dataset, split, len(names)), names, strict=True):
            faults[name][0](path)
            relative = path.relative_to(study.config.datasets[dataset].root).as_posix()
            image_id = manifest.loc[(manifest["dataset"] == dataset) & (manifest["path"] == relative), "image_id"]
            expected[str(image_id.iloc[0])] = faults[name][1]

    result = cxrgen("prepare", "study.yaml", "--until", "verify", "--workers", "1", cwd=data)
    assert result.returncode == 0, result.stderr[-3000:]
    excluded = pd.read_csv(study.dir.excluded).set_index("image_id")
    assert set(excluded.index) == {i for i, reason in expected.items() if reason is not None}
    for image_id, reason in expected.items():
        if reason is not None:
            assert excluded.loc[image_id, "reason"].startswith(reason), (image_id, excluded.loc[image_id, "reason"])
    # the test-set table of prepare's output: images, excluded, kept per dataset
    lost = {"chexpert": 2, "nih": 1, "mimic": 2}
    for dataset, n in lost.items():
        images = int(((manifest["dataset"] == dataset) & (manifest["split"] == "test")).sum())
        assert re.search(rf"{dataset}\s*│\s*{images}\s*│\s*{n}\s*│\s*{images - n}\s", result.stdout), result.stdout
    assert "warning" in result.stderr.lower() and "failed to decode" in result.stderr

    run_prepare(study, until="cache", workers=1)
    module = CXRDataModule.from_study(study, "c1", 32)
    train = manifest[manifest["dataset"].isin(["chexpert", "nih"]) & (manifest["split"] == "train")]
    assert len(module.train) == len(train) - 3 - 3  # 16-bit and palette PNGs stay in
    assert not set(module.train.image_ids) & set(excluded.index)
    assert module.excluded_test == lost
    for dataset, n in lost.items():
        images = int(((manifest["dataset"] == dataset) & (manifest["split"] == "test")).sum())
        assert len(module.test_dataset(dataset)) == images - n
    assert (module.train.targets == module.train.targets).any()  # a real, non-empty training set


def test_a_partial_copy_of_a_public_dataset_is_left_out_not_failed(data: Path) -> None:
    """Metadata rows whose image is not on disk (a partial NIH copy): a ``left out`` row of the cohort with the
    first paths, not in the plan's counts, not in excluded.csv; ``missing_images: error`` makes them fatal."""
    entry = pd.read_csv(data / NIH_CSV, dtype=str)
    gone = sorted(entry["Image Index"])[:4]
    for name in gone:
        (data / "nih" / "images_001" / "images" / name).unlink()
    result = cxrgen("prepare", "study.yaml", "--until", "verify", "--workers", "1", cwd=data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"nih\s*│\s*left out\s*│\s*4\s", result.stdout), result.stdout
    shown = ", ".join(f"images/{name}" for name in gone[:3])  # NIH puts a file it cannot find in images/
    assert f"{shown}, ..." in pd.read_csv(data / "runs/tiny/reading_notes.csv")["note"].iloc[0]
    manifest = pd.read_parquet(data / "runs/tiny/manifest.parquet")
    assert (manifest["dataset"] == "nih").sum() == len(entry) - 4
    assert pd.read_csv(data / "runs/tiny/excluded.csv").empty and "failed to decode" not in result.stderr
    study = yaml.safe_load((data / "study.yaml").read_text())
    study["datasets"]["nih"]["missing_images"] = "error"
    (data / "study.yaml").write_text(yaml.safe_dump(study))
    one_error(cxrgen("plan", "study.yaml", cwd=data), rf"datasets\.nih: 4 of {len(entry)} image\(s\)",
              r"not on disk", r"missing_images: error")  # fmt: skip


# ------------------------------------------------------------------------------------------------- tables


def _edit_csv(path: Path, edit: object) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = edit(frame)  # type: ignore[operator]
    if path.suffix == ".gz":
        with gzip.open(path, "wt", newline="") as handle:
            frame.to_csv(handle, index=False)
    else:
        frame.to_csv(path, index=False)


def _leak_one_subject(frame: pd.DataFrame) -> pd.DataFrame:
    test = frame[frame["split"] == "test"]
    subject = test["subject_id"].value_counts().index[0]  # a test subject with several images
    first = frame.index[frame["subject_id"] == subject][0]
    frame.loc[first, "split"] = "train"
    return frame


TABLE_FAULTS = {
    "missing column": (CHEX_CSV, lambda f: f.drop(columns=["Edema"]), [r"train\.csv", r"missing column.*'Edema'"]),
    "unknown label value": (
        CHEX_CSV, lambda f: f.assign(Cardiomegaly=f["Cardiomegaly"].where(f.index != 4, "2.0")),
        [r"train\.csv", r"line 6, column 'Cardiomegaly'", "'2.0'"],
    ),
    "unknown NIH finding": (
        NIH_CSV, lambda f: f.assign(**{"Finding Labels": f["Finding Labels"].where(f.index != 2, "Cardiomegally")}),
        [r"Data_Entry_2017_v2020\.csv", r"line 4, column 'Finding Labels'", "Cardiomegally"],
    ),
    "duplicate image id": (
        CHEX_CSV, lambda f: pd.concat([f, f.iloc[[3]]], ignore_index=True),
        [r"train\.csv", "duplicate image id", r"rows 5 and \d+"],
    ),
    "duplicate MIMIC dicom_id": (
        MIMIC_SPLIT, lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True),
        [r"split\.csv\.gz", r"line 2", "duplicate dicom_id"],
    ),
    "patient in two splits": (
        MIMIC_SPLIT, _leak_one_subject, [r"split\.csv\.gz", r"line \d+", r"subject_id \d+", "train", "test"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(TABLE_FAULTS))
def test_bad_table_stops_prepare_with_one_line_naming_file_and_row_or_column(data: Path, fault: str) -> None:
    relative, edit, patterns = TABLE_FAULTS[fault]
    _edit_csv(data / relative, edit)
    result = cxrgen("prepare", "study.yaml", "--until", "splits", cwd=data)
    one_error(result, *patterns)
    assert not (data / "runs" / "tiny" / "splits.parquet").exists()


@pytest.mark.parametrize(
    ("relative", "content", "pattern"),
    [
        (CHEX_CSV, b"", r"train\.csv: not a readable CheXpert CSV"),
        (CHEX_CSV, b"\xef\xbb\xbf", r"train\.csv: not a readable CheXpert CSV"),
        (NIH_CSV, b"", r"Data_Entry_2017_v2020\.csv: empty file"),
        (MIMIC_SPLIT, gzip.compress(b"", mtime=0), r"split\.csv\.gz: not a readable gzipped CSV"),
        (MIMIC_SPLIT, b"not gzip at all", r"split\.csv\.gz: not a readable gzipped CSV"),
    ],
)
def test_empty_or_unreadable_csv_is_one_error(data: Path, relative: Path, content: bytes, pattern: str) -> None:
    (data / relative).write_bytes(content)
    one_error(cxrgen("prepare", "study.yaml", "--until", "splits", cwd=data), pattern)


def test_bom_and_windows_line_endings_are_read_as_the_plain_files(data: Path) -> None:
    reference = build_manifest(load_study(data / "study.yaml"))
    for relative in (CHEX_CSV, NIH_CSV, *sorted(Path("mimic").glob("*.csv.gz"))):
        path = data / relative
        gz = path.suffix == ".gz"
        text = (gzip.decompress(path.read_bytes()) if gz else path.read_bytes()).decode("utf-8")
        assert "\r" not in text
        raw = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8")
        path.write_bytes(gzip.compress(raw) if gz else raw)
    for name in ("train_val_list.txt", "test_list.txt"):
        listing = data / "nih" / name
        if listing.exists():
            listing.write_bytes(b"\xef\xbb\xbf" + listing.read_bytes().replace(b"\n", b"\r\n"))
    result = cxrgen("prepare", "study.yaml", "--until", "splits", cwd=data)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = pd.read_parquet(data / "runs" / "tiny" / "manifest.parquet")
    pd.testing.assert_frame_equal(manifest, reference)


# -------------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("relative", "column", "value"),
    [
        (CHEX_CSV, "Path", "/etc/passwd"),
        (CHEX_CSV, "Path", "CheXpert-v1.0-small/train/../../../../etc/patient00001/study1/view1_frontal.jpg"),
        (CHEX_CSV, "Path", "C:\\data\\train\\patient00001\\study1\\view1_frontal.jpg"),
        (NIH_CSV, "Image Index", "../../../../etc/00000001_000.png"),
        (NIH_CSV, "Image Index", "/etc/00000001_000.png"),
    ],
)
def test_absolute_or_climbing_paths_in_csv_rows_are_refused(
    data: Path, relative: Path, column: str, value: str
) -> None:
    _edit_csv(data / relative, lambda f: f.assign(**{column: f[column].where(f.index != 1, value)}))
    one_error(
        cxrgen("prepare", "study.yaml", "--until", "manifest", cwd=data),
        re.escape(relative.name), "line 3", "absolute or leaves the dataset root",
    )  # fmt: skip


def _study_with(data: Path, edit: object) -> Path:
    study = yaml.safe_load((data / "study.yaml").read_text())
    edit(study)  # type: ignore[operator]
    (data / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return data / "study.yaml"


def _rename_dataset(study: dict[str, object], new: str) -> None:
    datasets = study["datasets"]
    splits = study["splits"]
    assert isinstance(datasets, dict) and isinstance(splits, dict)
    datasets[new] = datasets.pop("mimic")
    splits[new] = splits.pop("mimic")
    study["configurations"][0]["external"] = [new]  # type: ignore[index]


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda s: s.update(name="../x"), "name"),
        (lambda s: s.update(name="a/b"), "name"),
        (lambda s: _rename_dataset(s, "../x"), "datasets"),
        (lambda s: _rename_dataset(s, "a/b"), "datasets"),
        (lambda s: s["configurations"][0].update(name="../x"), r"configurations\.0\.name"),
        (lambda s: s["configurations"][0].update(name="a/b"), r"configurations\.0\.name"),
        (lambda s: s.update(architectures=["../x"]), ""),
        (lambda s: s.update(architectures=["a/b"]), ""),
    ],
)
def test_names_used_in_output_paths_are_refused_when_unsafe(data: Path, edit: object, key: str) -> None:
    _study_with(data, edit)
    line = one_error(cxrgen("prepare", "study.yaml", "--until", "manifest", cwd=data), r"study\.yaml", "not a safe")
    assert re.search(key, line), line
    assert not (data / "runs").exists() and not (data / "x").exists() and not (data.parent / "x").exists()


# ------------------------------------------------------------------------------------------------- config


def _append(text: str) -> object:
    return lambda path: path.write_text(path.read_text() + text)


def _edit(edit: object) -> object:
    return lambda path: _study_with(path.parent, edit)


@pytest.mark.parametrize(
    ("change", "patterns"),
    [
        (_edit(lambda s: s["train"].update(bogus=1)), [r"train\.bogus: unknown key"]),
        (_edit(lambda s: s.update(bogus=1)), [r"bogus: unknown key"]),
        (_append("name: again\n"), [r"duplicate key 'name' at line \d+ \(first at line 1\)"]),
        (_append("reference: {source: a, source: b}\n"), [r"duplicate key 'source'"]),
        (_edit(lambda s: s["preprocess"].update(size="big")), [r"preprocess\.size", "integer"]),
        (_edit(lambda s: s["train"].update(batch_size=[16])), [r"train\.batch_size", "integer"]),
        (_edit(lambda s: s.update(datasets=["chexpert"])), [r"datasets", "dictionary"]),
    ],
)
def test_bad_study_file_names_key_and_file(data: Path, change: object, patterns: list[str]) -> None:
    change(data / "study.yaml")  # type: ignore[operator]
    one_error(cxrgen("prepare", "study.yaml", "--until", "manifest", cwd=data), r"study\.yaml", *patterns)


def test_missing_dataset_root_names_key_and_file(data: Path) -> None:
    shutil.rmtree(data / "mimic")
    one_error(
        cxrgen("prepare", "study.yaml", "--until", "manifest", cwd=data),
        r"study\.yaml", r"datasets\.mimic\.root", "does not exist",
    )  # fmt: skip


def test_yaml_python_tags_are_refused_and_run_nothing(data: Path) -> None:
    marker = data / "pwned"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    (data / "study.yaml").write_text((data / "study.yaml").read_text().replace("name: tiny", f"name: {payload}"))
    one_error(cxrgen("prepare", "study.yaml", "--until", "manifest", cwd=data), r"study\.yaml", "not valid YAML")
    (data / "other.yaml").write_text(f"{payload}\n")
    one_error(cxrgen("prepare", "other.yaml", cwd=data), r"other\.yaml", "not valid YAML")
    assert not marker.exists()


# -------------------------------------------------------------------------------------------- checkpoints



def _run_folder(data: Path) -> Path:
    return data / "runs" / "tiny" / "runs" / "c1" / ARCH / "checkpoints"


@pytest.mark.slow
def test_hostile_checkpoint_is_refused_by_predict_and_train(data: Path) -> None:
    marker = data / "pwned"
    folder = _run_folder(data)
    folder.mkdir(parents=True)
    for name in ("best.ckpt", "last.ckpt"):
        torch.save({"state_dict": {}, "cxrgen": {"arch": ARCH}, "x": WritesAFile(marker)}, folder / name)
    predict = ("predict", "study.yaml", "--configuration", "c1", "--arch", ARCH)
    one_error(cxrgen(*predict, cwd=data), "is unfinished")  # refused before any checkpoint is opened
    train = cxrgen("train", "study.yaml", "--configuration", "c1", "--arch", ARCH, cwd=data)
    one_error(train, r"last\.ckpt", "pickled objects", "could run code")
    (folder.parent / "done.json").write_text("{}")  # a finished-looking run copied in with a hostile best.ckpt
    one_error(cxrgen(*predict, cwd=data), r"best\.ckpt", "pickled objects", "could run code")
    assert not marker.exists()


@pytest.mark.slow
def test_truncated_checkpoint_is_a_clear_error(data: Path) -> None:
    folder = _run_folder(data)
    save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "cxrgen": {"arch": ARCH}}, folder / "last.ckpt")
    truncated(folder / "last.ckpt")
    result = cxrgen("train", "study.yaml", "--configuration", "c1", "--arch", ARCH, cwd=data)
    one_error(result, r"last\.ckpt is truncated or damaged")


KEEP_SAVING = """
import sys, torch
from cxrgen.learn.checkpoints import save_checkpoint
epoch = 0
while True:
    epoch += 1
    save_checkpoint({"epoch": epoch, "w": torch.full((4_000_000,), float(epoch))}, sys.argv[1])
    print(epoch, flush=True)
"""


def test_kill_while_saving_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-c", KEEP_SAVING, str(path)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout is not None
    while int(proc.stdout.readline()) < 2:
        pass
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".last.ckpt.*.tmp")) or not any(p.stat().st_size for p in tmp_path.glob(".*.tmp")):
        assert time.monotonic() < deadline
    os.kill(proc.pid, signal.SIGKILL)  # while the next save is half written
    proc.wait()
    state = load_checkpoint(path)  # the last complete checkpoint, intact
    assert state["epoch"] >= 2 and bool((state["w"] == state["epoch"]).all())
    # The temporary file is never read as the checkpoint. When the kill landed mid-write it is shorter than a
    # complete one and a clear error if read (the kill can also land after the last byte, before the rename).
    complete = path.stat().st_size
    for partial in (p for p in tmp_path.glob(".*.tmp") if 0 < p.stat().st_size < complete):
        with pytest.raises(CheckpointError, match=r"truncated or damaged|does not exist"):
            load_checkpoint(partial)


# ------------------------------------------------------------------------------------------------ writes


def test_output_folder_that_cannot_be_created_is_one_error(data: Path) -> None:
    (data / "blocker").write_text("a regular file where the study directory should go")
    _study_with(data, lambda s: s.update(out="blocker/out"))
    one_error(cxrgen("prepare", "study.yaml", "--until", "manifest", cwd=data), "blocker", "Not a directory")


NO_SPACE = """
import errno, os, sys
real = os.replace
def replace(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == os.environ["FULL_DISK_FOR"]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
    return real(src, dst, *args, **kwargs)
os.replace = replace
sys.argv[0] = "cxrgen"
from cxrgen.cli import main
main()
"""


@pytest.mark.slow
def test_a_full_disk_stops_with_one_error_and_keeps_the_previous_state(data: Path) -> None:
    out = data / "runs" / "tiny"
    first = cxrgen("prepare", "study.yaml", "--until", "verify", "--workers", "1", cwd=data)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {name: (out / name).read_bytes() for name in ("manifest.parquet", "splits.parquet", "excluded.csv")}
    # New inputs: a changed label (new manifest) and a broken image (new excluded.csv).
    _edit_csv(data / CHEX_CSV, lambda f: f.assign(Edema=f["Edema"].where(f.index != 0, "1.0")))
    truncated(data / "chexpert" / pd.read_parquet(out / "manifest.parquet")["path"].iloc[0])

    for target in ("manifest.parquet", "excluded.csv"):
        result = subprocess.run(
            [sys.executable, "-c", NO_SPACE, "prepare", "study.yaml", "--until", "verify", "--workers", "1"],
            cwd=data, capture_output=True, text=True, timeout=120, env={**ENV, "FULL_DISK_FOR": target},
        )  # fmt: skip
        one_error(result, "No space left on device", re.escape(target))
        assert (out / target).read_bytes() == before[target]
        assert not list(out.glob(".*.tmp"))
        pd.read_parquet(out / "manifest.parquet")
        pd.read_csv(out / "excluded.csv")
    assert pd.read_csv(out / "excluded.csv").empty  # still the state before

    again = cxrgen("prepare", "study.yaml", "--until", "verify", "--workers", "1", cwd=data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(pd.read_csv(out / "excluded.csv")) == 1  # a failed write never marked verify as done
    assert pd.read_parquet(out / "manifest.parquet")["raw_Edema"].iloc[0] == 1.0
