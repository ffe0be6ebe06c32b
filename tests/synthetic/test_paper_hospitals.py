"""The synthetic hospitals: determinism, resumability, the native file formats, and the phantom's signs."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrgen.study.config import load_study
from cxrgen.synthetic import HOSPITALS, cardiothoracic_ratio, frontal_geometry, frontal_masks, write_synthetic
from cxrgen.synthetic.hospitals import CHEXPERT_OBSERVATIONS, sample_patients
from cxrgen.synthetic.phantom import DRAWN_FINDINGS

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,"
    "Support Devices"
)
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Sex,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
NIH_TOKENS = {
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
    "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax", "No Finding",
}


def make(out_dir: Path, seed: int = 0, workers: int = 1) -> Path:
    """A small dataset: about 150 images of 64 px."""
    return write_synthetic(out_dir, seed=seed, scale=0.05, image_size=64, workers=workers)


def digests(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("synthetic") / "data")


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"))))


def test_same_seed_same_bytes_whatever_the_workers(data: Path, tmp_path: Path) -> None:
    again = make(tmp_path / "again", workers=2)
    other = make(tmp_path / "other", seed=1)
    reference = digests(data)
    assert len(reference) > 100
    assert digests(again) == reference
    changed = digests(other)
    assert changed.keys() != reference.keys() or changed != reference
    shared = set(changed) & set(reference) - {".cxrgen-synthetic.json", "study.yaml"}
    assert sum(changed[k] != reference[k] for k in shared) > 0.9 * len(shared)


def test_rerun_after_a_kill_finishes_with_the_same_bytes(data: Path, tmp_path: Path) -> None:
    target = make(tmp_path / "killed")
    images = sorted(target.rglob("*.jpg"))
    for victim in images[::3]:
        victim.unlink()
    (target / "nih/Data_Entry_2017_v2020.csv").unlink()
    (target / "study.yaml").unlink()
    (images[0].parent / f".{images[0].name}.k3j9x2.tmp").write_bytes(b"half an image")  # a write cut short
    make(target)
    assert digests(target) == digests(data)


def test_a_used_folder_refuses_other_parameters(data: Path) -> None:
    with pytest.raises(ValueError, match="choose an empty folder"):
        make(data, seed=5)


def test_chexpert_layout(data: Path) -> None:
    root = data / "chexpert/CheXpert-v1.0-small"
    for name in ("train.csv", "valid.csv"):
        text = (root / name).read_bytes()
        assert text.decode().splitlines()[0] == CHEXPERT_HEADER
        assert b"\r" not in text
        rows = read_csv(text)[1:]
        assert rows
        for row in rows:
            path, sex, age, frontal, appa, *values = row
            pattern = rf"CheXpert-v1.0-small/{name[:5]}/patient\d{{5}}/study\d+/view\d_(frontal|lateral)\.jpg"
            assert re.fullmatch(pattern, path)
            assert (data / "chexpert" / path).is_file()
            assert sex in ("Male", "Female", "Unknown") and 18 <= int(age) <= 95
            assert (frontal, path.endswith("_frontal.jpg")) in (("Frontal", True), ("Lateral", False))
            assert appa in (("AP", "PA") if frontal == "Frontal" else ("",))
            allowed = {"1.0", "0.0"} if name == "valid.csv" else {"1.0", "0.0", "-1.0", ""}
            assert set(values) <= allowed and len(values) == 14
    train = read_csv((root / "train.csv").read_bytes())[1:]
    assert {"-1.0", ""} <= {v for row in train for v in row[5:]}
    assert {row[3] for row in train} == {"Frontal", "Lateral"}
    with Image.open(data / "chexpert" / train[0][0]) as image:
        assert image.format == "JPEG" and image.mode == "L" and image.width > image.height


def test_nih_layout(data: Path) -> None:
    root = data / "nih"
    text = (root / "Data_Entry_2017_v2020.csv").read_bytes()
    assert b"\r" not in text and text.endswith(b",\n")
    lines = text.decode().splitlines()
    assert lines[0] == NIH_HEADER
    assert all(line.endswith(",") for line in lines)
    modes = set()
    names = []
    for line in lines[1:]:
        name, labels, follow_up, patient, age, sex, view, width, height, sx, sy, empty = line.split(",")
        assert name == f"{int(patient):08d}_{int(follow_up):03d}.png" and empty == ""
        assert age.isdigit() and 18 <= int(age) <= 95 and sex in ("M", "F") and view in ("PA", "AP")
        assert set(labels.split("|")) <= NIH_TOKENS and ("No Finding" not in labels or labels == "No Finding")
        assert width.isdigit() and height.isdigit() and float(sx) == float(sy) > 0
        (image_path,) = root.glob(f"images_0*/images/{name}")
        with Image.open(image_path) as image:
            modes.add(image.mode)
            assert image.format == "PNG" and image.size == (64, 64)
        names.append(name)
    assert names == sorted(names) and "L" in modes and modes <= {"L", "RGBA"}
    lists = {}
    for list_name in ("train_val_list.txt", "test_list.txt"):
        raw = (root / list_name).read_bytes()
        assert not raw.endswith(b"\n")
        lists[list_name] = raw.decode().split("\n")
    assert sorted(lists["train_val_list.txt"] + lists["test_list.txt"]) == names
    patients = {k: {n.split("_")[0] for n in v} for k, v in lists.items()}
    assert patients["test_list.txt"] and not patients["train_val_list.txt"] & patients["test_list.txt"]


def test_mimic_layout(data: Path) -> None:
    root = data / "mimic"
    tables = {}
    for kind in ("chexpert", "negbio", "metadata", "split"):
        raw = (root / f"mimic-cxr-2.0.0-{kind}.csv.gz").read_bytes()
        assert raw[:4] == b"\x1f\x8b\x08\x00" and raw[4:8] == b"\x00\x00\x00\x00"  # no file name, mtime 0
        tables[kind] = read_csv(gzip.decompress(raw))
    label_header = ["subject_id", "study_id", *sorted(CHEXPERT_OBSERVATIONS)]
    assert tables["chexpert"][0] == tables["negbio"][0] == label_header
    assert tables["metadata"][0][:5] == ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                                         "ViewPosition"]
    assert tables["split"][0] == ["dicom_id", "study_id", "subject_id", "split"]
    studies = {(r[0], r[1]) for r in tables["chexpert"][1:]}
    assert len(studies) == len(tables["chexpert"]) - 1
    assert {v for r in tables["chexpert"][1:] for v in r[2:]} == {"1.0", "0.0", "-1.0", ""}
    metadata, split = tables["metadata"][1:], tables["split"][1:]
    by_dicom = {r[0]: (r[2], r[1]) for r in split}
    assert {r[0]: (r[1], r[2]) for r in metadata} == by_dicom  # (subject, study) per dicom_id
    assert [r[0] for r in metadata] != [r[0] for r in split]  # same keys, different row orders
    assert [r[1] for r in tables["chexpert"][1:]] != [r[1] for r in tables["negbio"][1:]]
    assert {r[3] for r in split} == {"train", "validate", "test"}
    views = {r[4] for r in metadata}
    assert views <= {"PA", "AP", "LATERAL", "LL", ""} and {"PA", "LATERAL"} <= views
    for dicom, subject, study, *_rest in metadata:
        assert re.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}", dicom) and (subject, study) in studies
        assert re.fullmatch(r"1\d{7}", subject) and re.fullmatch(r"5\d{7}", study)
        assert (root / f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg").is_file()


def test_study_file_loads_with_relative_paths(data: Path) -> None:
    text = (data / "study.yaml").read_text()
    assert str(data) not in text
    study = load_study(data / "study.yaml")
    assert {k: v.root for k, v in study.datasets.items()} == {k: data / k for k in ("chexpert", "nih", "mimic")}
    assert [c.name for c in study.configurations] == ["chexpert", "nih", "both"]
    assert study.split_for("mimic").method == "official" and not study.train.pretrained
    assert study.preprocess.size == 80  # the smallest multiple of 16 inception_resnet_v2 runs on (75 px)


@pytest.mark.parametrize("hospitals", [None, ("chexpert", "padchest")])
def test_the_written_study_builds_and_runs_every_architecture_it_names(hospitals: tuple[str, ...] | None) -> None:
    """Issue 27: each named architecture runs a forward pass on the study's input (before: inception_resnet_v2
    at 64 px failed with a kernel-size error). CPU, random weights, a batch of 2."""
    import torch
    import yaml

    from cxrgen.models.registry import create_model
    from cxrgen.study.config import StudyConfig
    from cxrgen.synthetic.write import sites_study_yaml, study_yaml

    text = study_yaml(0, 0.05, 64) if hospitals is None else sites_study_yaml(0, 0.05, 64, hospitals)
    raw = yaml.safe_load(text)
    config = StudyConfig.model_validate({**raw, "out": "runs/x"})
    assert config.architectures
    for arch in config.architectures:
        size = config.input_size(arch)
        model = create_model(arch, len(config.labels), pretrained=False).eval()
        with torch.no_grad():
            logits = model(torch.rand(2, 3, size, size))
        assert logits.shape == (2, len(config.labels)), arch


def test_the_registered_smallest_input_is_the_smallest_that_runs() -> None:
    """``min_input_size`` of the registry, checked against timm's network: it runs there and fails one pixel below."""
    import torch

    from cxrgen.models.registry import create_model, get_arch

    spec = get_arch("inception_resnet_v2")
    model = create_model(spec.name, 5, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, spec.min_input_size, spec.min_input_size)).shape == (1, 5)
        with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
            model(torch.rand(1, 3, spec.min_input_size - 1, spec.min_input_size - 1))


def test_layouts_read_back_through_prepare_until_splits(tmp_path: Path) -> None:
    """``cxrgen synthesize`` then ``cxrgen prepare OUT/study.yaml --until splits``, as a user would type them."""
    import subprocess
    import sys

    import pandas as pd

    def cxrgen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cxrgen", *args], capture_output=True, text=True, timeout=300)

    out = tmp_path / "hospitals"
    assert cxrgen("synthesize", str(out), "--scale", "0.05", "--image-size", "64").returncode == 0
    result = cxrgen("prepare", str(out / "study.yaml"), "--until", "splits")
    assert result.returncode == 0, result.stderr
    study_dir = load_study(out / "study.yaml").out
    manifest = pd.read_parquet(study_dir / "manifest.parquet")
    with open(out / "chexpert" / "CheXpert-v1.0-small" / "train.csv", newline="") as handle:
        chexpert_rows = sum(1 for _ in csv.DictReader(handle))
    with open(out / "nih" / "Data_Entry_2017_v2020.csv", newline="") as handle:
        nih_rows = sum(1 for _ in handle) - 1
    with gzip.open(out / "mimic" / "mimic-cxr-2.0.0-metadata.csv.gz", "rt") as handle:
        mimic_rows = sum(1 for _ in handle) - 1
    assert manifest.groupby("dataset").size().to_dict() == {"chexpert": chexpert_rows, "nih": nih_rows,
                                                            "mimic": mimic_rows}
    assert all((manifest.loc[manifest["dataset"] == d, "path"].map(lambda p, d=d: (out / d / p).is_file())).all()
               for d in ("chexpert", "nih", "mimic"))
    splits = pd.read_parquet(study_dir / "splits.parquet")
    assert set(splits["split"]) == {"train", "val", "test"}
    assert (splits.loc[splits["dataset"] == "mimic", "split"] == "test").any()


def test_cardiomegaly_is_a_cardiothoracic_ratio_above_one_half() -> None:
    rng = np.random.default_rng(0)
    for strength, enlarged in [(0.0, False)] * 20 + [(s, True) for s in np.linspace(0.6, 1.0, 20)]:
        geometry = frontal_geometry(rng, {"Cardiomegaly": float(strength)}, atelectasis_side=1)
        assert (geometry.cardiothoracic_ratio > 0.5) == enlarged
        # Measure it on the rendered masks as a radiologist would: widest heart over widest thorax.
        masks = frontal_masks(geometry, (400, 400))
        heart_cols = np.flatnonzero((masks["heart"] > 0.5).any(axis=0))
        lung_cols = np.flatnonzero((masks["lungs"] > 0.5).any(axis=0))
        measured = (heart_cols[-1] - heart_cols[0] + 1) / (lung_cols[-1] - lung_cols[0] + 1)
        assert measured == pytest.approx(geometry.cardiothoracic_ratio, abs=0.03)
    ambiguous = [cardiothoracic_ratio(s, rng) for s in np.linspace(0.2, 0.45, 10)]
    assert min(ambiguous) > 0.47 and max(ambiguous) < 0.54


@pytest.mark.parametrize("name", ["chexpert", "nih", "mimic"])
def test_label_proportions_follow_the_hospital(name: str) -> None:
    hospital = HOSPITALS[name]
    patients = sample_patients(hospital, np.random.default_rng(1), 1500)
    studies = [s for p in patients for s in p.studies]
    for label in DRAWN_FINDINGS:
        raw = np.array([s.raw[label] for s in studies])
        assert np.mean((raw == 1.0) | (raw == -1.0)) == pytest.approx(hospital.prevalence[label], abs=0.03)
        hedged = np.sum(raw == -1.0) / max(1, np.sum((raw == 1.0) | (raw == -1.0)))
        assert hedged == pytest.approx(hospital.uncertain[label], abs=0.06)
        assert np.isnan(raw).any() != hospital.binary
    card = np.array([s.truth["Cardiomegaly"] for s in studies], dtype=bool)
    device = np.array([s.device for s in studies])
    shortcut = device[card].mean() - device[~card].mean()
    assert shortcut > 0.5 if name == "nih" else abs(shortcut) < 0.05  # the pacemaker shortcut lives at NIH only
    ages = [s.age for s in studies]
    assert min(ages) >= 18 and max(ages) <= 95
    assert all(math.isnan(s.raw["No Finding"]) or s.raw["No Finding"] in (0.0, 1.0) for s in studies)
