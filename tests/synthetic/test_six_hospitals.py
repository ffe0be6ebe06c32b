"""Six synthetic hospitals: written natively, read back through ``cxrgen prepare``, planned and run leave-one-out."""

from __future__ import annotations

import csv
import gzip
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrgen.report.inputs import load_inputs
from cxrgen.runner.plan import plan_table
from cxrgen.study.config import ConfigError, load_study

SIX = ("chexpert", "nih", "mimic", "padchest", "vindr", "brax")
PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"


def cxrgen(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxrgen", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("six") / "hospitals"
    result = cxrgen("synthesize", str(out), "--scale", "0.05", "--image-size", "64", "--workers", "1",
                    "--hospitals", ",".join(SIX))
    assert result.returncode == 0, result.stderr
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as handle:  # type: ignore[operator]
        return list(csv.DictReader(handle))


def _native_counts(out: Path) -> dict[str, int]:
    """Images per hospital counted from the native files with the csv module alone (no reader)."""
    vindr_train = {r["image_id"] for r in _rows(out / "vindr/annotations/image_labels_train.csv")}
    vindr_test = {r["image_id"] for r in _rows(out / "vindr/annotations/image_labels_test.csv")}
    with open(out / "nih/Data_Entry_2017_v2020.csv", encoding="utf-8") as handle:
        nih = sum(1 for _ in handle) - 1
    return {
        "chexpert": len(_rows(out / "chexpert/CheXpert-v1.0-small/train.csv")),
        "nih": nih,
        "mimic": len(_rows(out / "mimic/mimic-cxr-2.0.0-metadata.csv.gz")),
        "padchest": sum(1 for r in _rows(out / "padchest" / PADCHEST_CSV) if r["Labels"]),
        "vindr": len(vindr_train | vindr_test),
        "brax": len(_rows(out / "brax/master_spreadsheet_update.csv")),
    }


def test_native_files_carry_the_shipped_quirks(six: Path) -> None:
    import pydicom

    padchest = _rows(six / "padchest" / PADCHEST_CSV)
    assert any(not r["Labels"] for r in padchest) and any("[' " in r["Labels"] for r in padchest)
    png = next(p for p in (six / "padchest").rglob("*.png"))
    image = Image.open(png)
    assert image.mode.startswith("I;16") or image.mode == "I"
    values = np.asarray(image)
    assert 255 < values.max() <= 4095  # 12 bits stored in a 16-bit PNG
    syntaxes, photometric, windows = set(), set(), 0
    for path in (six / "vindr").rglob("*.dicom"):
        ds = pydicom.dcmread(path)
        syntaxes.add(ds.file_meta.TransferSyntaxUID.name)
        photometric.add(ds.PhotometricInterpretation)
        windows += "WindowCenter" in ds
    assert photometric == {"MONOCHROME1", "MONOCHROME2"} and windows > 0
    assert {"RLE Lossless", "Explicit VR Little Endian"} <= syntaxes
    marks = pd.DataFrame(_rows(six / "vindr/annotations/image_labels_train.csv"))
    assert (marks.groupby("image_id")["rad_id"].nunique() == 3).all()
    disagree = marks.groupby("image_id")[["Cardiomegaly", "Atelectasis", "Pleural effusion"]].nunique()
    assert (disagree > 1).any().any()  # three radiologists who sometimes disagree


def test_six_hospitals_read_back_through_prepare_until_splits(six: Path) -> None:
    result = cxrgen("prepare", str(six / "study.yaml"), "--until", "splits")
    assert result.returncode == 0, result.stderr
    study_dir = load_study(six / "study.yaml").out
    manifest = pd.read_parquet(study_dir / "manifest.parquet")
    assert manifest.groupby("dataset").size().to_dict() == _native_counts(six)
    for dataset in SIX:
        paths = manifest.loc[manifest["dataset"] == dataset, "path"]
        assert paths.map(lambda p, d=dataset: (six / d / p).is_file()).all(), dataset
    splits = pd.read_parquet(study_dir / "splits.parquet")
    vindr_test = {f"vindr:{r['image_id']}" for r in _rows(six / "vindr/annotations/image_labels_test.csv")}
    assert set(splits.loc[(splits["dataset"] == "vindr") & (splits["split"] == "test"), "image_id"]) == vindr_test
    # What the readers left out or could not say is a line of the cohort table, not only a warning.
    null_labels = sum(1 for r in _rows(six / "padchest" / PADCHEST_CSV) if not r["Labels"])
    assert null_labels > 0
    notes = pd.read_csv(study_dir / "reading_notes.csv").set_index("dataset")
    assert notes.loc["padchest", "kind"] == "left out" and notes.loc["padchest", "rows"] == null_labels
    assert notes.loc["vindr", "kind"] == "note" and notes.loc["vindr", "rows"] == _native_counts(six)["vindr"]
    cohort_lines = result.stdout.splitlines()
    assert any(re.search(rf"padchest\s*│\s*left out\s*│\s*{null_labels}\s*│.*null Labels", line)
               for line in cohort_lines), result.stdout
    vindr_images = _native_counts(six)["vindr"]
    assert any(re.search(rf"vindr\s*│\s*note\s*│\s*{vindr_images}\s*│.*no patient ids", line)
               for line in cohort_lines), result.stdout
    inputs = load_inputs(study_dir)  # the report's cohort table reads the same notes back
    assert inputs.reading_notes is not None
    pd.testing.assert_frame_equal(inputs.reading_notes.set_index("dataset"), notes)
    brax = manifest.loc[manifest["dataset"] == "brax"]
    assert brax["age_bin"].str.fullmatch(r"\d+-\d+|\d+ or more").all()  # the bin beside its midpoint age


def test_design_expands_beside_hand_written_configurations(six: Path, tmp_path: Path) -> None:
    text = (six / "study.yaml").read_text().replace("single_sources: false", "single_sources: true")
    text = text.replace("root: ", f"root: {six}/").replace("out: runs/sites", f"out: {tmp_path}/runs")
    text += "configurations:\n  - {name: mine, train: [nih], internal: [nih], external: [brax]}\n"
    (tmp_path / "s.yaml").write_text(text)
    config = load_study(tmp_path / "s.yaml")
    names = [c.name for c in config.configurations]
    assert names == ["mine", *(f"loo-{h}" for h in SIX), *(f"only-{h}" for h in SIX)]
    loo = config.configuration("loo-vindr")
    assert loo.external == ["vindr"] and loo.train == loo.internal == ["chexpert", "nih", "mimic", "padchest", "brax"]
    only = config.configuration("only-brax")
    assert only.train == ["brax"] and only.external == ["chexpert", "nih", "mimic", "padchest", "vindr"]
    # The resolved file, read back, holds the configurations once.
    from cxrgen.study.config import StudyConfig, dump_resolved, read_yaml

    (tmp_path / "resolved.yaml").write_text(dump_resolved(config))
    again = StudyConfig.model_validate(read_yaml(tmp_path / "resolved.yaml"))
    assert [c.name for c in again.configurations] == names
    clash = text.replace("name: mine, train: [nih]", "name: loo-nih, train: [nih]")
    (tmp_path / "clash.yaml").write_text(clash)
    with pytest.raises(ConfigError, match="'loo-nih' is written by hand and by design"):
        load_study(tmp_path / "clash.yaml")


def test_plan_counts_are_the_split_images(six: Path) -> None:
    result = cxrgen("plan", str(six / "study.yaml"))
    assert result.returncode == 0, result.stderr
    for held_out in SIX:
        assert f"loo-{held_out}" in result.stdout
    config = load_study(six / "study.yaml")
    manifest = pd.read_parquet(config.out / "manifest.parquet")
    splits = pd.read_parquet(config.out / "splits.parquet")
    table = plan_table(config, manifest, splits).set_index("configuration")
    for held_out in SIX:
        others = [d for d in SIX if d != held_out]
        test = splits[splits["split"] == "test"]
        row = table.loc[f"loo-{held_out}"]
        assert row["int img"] == test["dataset"].isin(others).sum()
        assert row["train img"] == ((splits["split"] == "train") & splits["dataset"].isin(others)).sum()
        assert row["external img/pat"].startswith(f"{held_out} {(test['dataset'] == held_out).sum()}/")


def test_plan_refuses_overlapping_test_sets_and_shared_roots(six: Path, tmp_path: Path) -> None:
    base = (six / "study.yaml").read_text().replace("root: ", f"root: {six}/")
    base = base.replace("out: runs/sites", f"out: {tmp_path}/runs")
    overlap = base.replace("design: {leave_one_out: [chexpert, nih, mimic, padchest, vindr, brax], "
                           "single_sources: false}",
                           "configurations:\n  - {name: leak, train: [nih], internal: [nih, brax], external: [brax]}")
    (tmp_path / "overlap.yaml").write_text(overlap)
    result = cxrgen("plan", str(tmp_path / "overlap.yaml"))
    assert result.returncode == 1
    assert "configurations[0] ('leak').internal names ['brax'], which it does not train on" in result.stderr
    twice = base.replace("  brax: {reader: brax, root:", f"  brax2: {{reader: brax, root: {six}/brax}}\n"
                         "  brax: {reader: brax, root:")
    (tmp_path / "twice.yaml").write_text(twice)
    result = cxrgen("plan", str(tmp_path / "twice.yaml"))
    assert result.returncode == 1 and "datasets.brax2.root and datasets.brax.root overlap" in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything was written


@pytest.mark.slow
def test_six_hospital_leave_one_out_study_end_to_end(six: Path, tmp_path: Path) -> None:
    """Tiny models, one epoch: every run's internal and external predictions cover exactly the right images."""
    text = (six / "study.yaml").read_text().replace("root: ", f"root: {six}/")
    text = text.replace("out: runs/sites", f"out: {tmp_path}/runs").replace("architectures: [densenet121]",
                                                                          "architectures: [test_resnet]")
    text = text.replace("max_epochs: 3", "max_epochs: 1, num_workers: 0").replace("batch_size: 32", "batch_size: 16")
    text += "evaluation: {bootstrap: 10}\n"
    (tmp_path / "study.yaml").write_text(text)
    result = cxrgen("study", str(tmp_path / "study.yaml"), "--workers", "1", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    config = load_study(tmp_path / "study.yaml")
    splits = pd.read_parquet(config.out / "splits.parquet")
    excluded = set(pd.read_csv(config.out / "excluded.csv")["image_id"])
    assert not excluded  # every DICOM (compressed, MONOCHROME1, windowed) and 16-bit PNG decoded
    test = splits[splits["split"] == "test"]
    for held_out in SIX:
        others = [d for d in SIX if d != held_out]
        predictions = config.out / "runs" / f"loo-{held_out}" / "test_resnet" / "predictions"
        internal = set(pd.read_parquet(predictions / "internal.parquet")["image_id"])
        external = set(pd.read_parquet(predictions / f"{held_out}.parquet")["image_id"])
        assert internal == set(test.loc[test["dataset"].isin(others), "image_id"])
        assert external == set(test.loc[test["dataset"] == held_out, "image_id"])
        assert not internal & external


def test_configs_sites_yaml_is_the_six_hospital_design() -> None:
    config = load_study(Path(__file__).resolve().parents[2] / "configs" / "sites.yaml")
    assert set(config.datasets) == set(SIX)
    assert [c.name for c in config.configurations] == [*(f"loo-{h}" for h in SIX), *(f"only-{h}" for h in SIX)]
    assert config.datasets["vindr"].options() == {"readers": "majority"}
    assert config.datasets["padchest"].options() == {"labelled_by": "any"}


def test_new_sites_are_the_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    from cxrgen.synthetic import write_synthetic

    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    sites = ("padchest", "vindr", "brax")
    one = files(write_synthetic(tmp_path / "one", scale=0.02, image_size=48, workers=1, hospitals=sites))
    two = files(write_synthetic(tmp_path / "two", scale=0.02, image_size=48, workers=2, hospitals=sites))
    assert one == two and sum(name.endswith(".dicom") for name in one) >= 5
    with pytest.raises(ValueError, match="hospitals must be distinct names"):
        write_synthetic(tmp_path / "bad", hospitals=("padchest", "padchest"))
