"""The report of a one-dataset study on the real NIH radiographs in ``../shared/realdata`` (issue 26).

The manifest is the NIH reader's own on the real metadata, kept to the 110 images that are there; the splits are
patient-level; the scores come from the real pixels (mean brightness of the centre, no training), so the first
table is computed from real images and real labels. Skips where ``../shared/realdata`` is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrgen.data.splits import check_leakage, random_split
from cxrgen.report import build_report
from cxrgen.study.config import SplitConfig, StudyConfig, dump_resolved

LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion"]


def _study(realdata: Path, out: Path) -> Path:
    from cxrgen.sources import get_reader

    nih = realdata / "nih"
    frame = get_reader("nih")(nih / "metadata", name="nih", labels=LABELS,
                              options={"metadata": "Data_Entry_2017_v2020.csv.gz"})  # fmt: skip
    images = {p.name: p for p in (nih / "images_1024").glob("*.png")}
    frame = frame.loc[frame["path"].map(lambda p: Path(p).name in images)].reset_index(drop=True)
    assert len(frame) == len(images) == 110
    for label in LABELS:  # NIH records no uncertain labels: the policy leaves the raw 0/1 as they are
        frame[label] = frame[f"raw_{label}"]
    split = random_split(frame, SplitConfig(seed=0, fractions={"train": 0.4, "val": 0.1, "test": 0.5}))
    check_leakage(pd.DataFrame({"split": split}), frame["patient_id"])
    config = StudyConfig.model_validate({
        "name": "nih-real", "out": str(out), "labels": LABELS,
        "datasets": {"nih": {"reader": "nih", "root": str(nih), "metadata": "Data_Entry_2017_v2020.csv.gz"}},
        "architectures": ["densenet121"], "evaluation": {"bootstrap": 200, "seed": 0},
        "configurations": [{"name": "nih", "train": ["nih"], "internal": ["nih"]}],
    })  # fmt: skip
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(dump_resolved(config), encoding="utf-8")
    frame.to_parquet(out / "manifest.parquet", index=False)
    pd.DataFrame({"image_id": frame["image_id"], "dataset": "nih", "split": split}).to_parquet(
        out / "splits.parquet", index=False)
    test = frame.loc[split == "test"]
    brightness = np.array([
        np.asarray(Image.open(images[Path(p).name]).convert("L"), dtype=np.float64)[256:768, 256:768].mean() / 255
        for p in test["path"]])  # fmt: skip
    predictions = pd.DataFrame({"image_id": test["image_id"], "patient_id": test["patient_id"]})
    for k, label in enumerate(LABELS):
        predictions[f"y_{label}"] = test[label].to_numpy(dtype=float)
        predictions[f"p_{label}"] = np.clip(brightness * (0.6 + 0.1 * k), 0.01, 0.99)
    folder = out / "runs" / "nih" / "densenet121" / "predictions"
    folder.mkdir(parents=True)
    predictions.to_parquet(folder / "internal.parquet", index=False)
    return out


@pytest.mark.realdata
@pytest.mark.slow
def test_first_table_and_sections_on_the_real_nih_radiographs(realdata: Path, tmp_path: Path) -> None:
    results = build_report(_study(realdata, tmp_path / "study"), review=False)
    overview = pd.read_csv(results / "overview.csv")
    assert len(overview) == 1
    row = overview.iloc[0]
    assert row["test_set"] == "internal" and row["kind"] == "internal" and bool(row["labelled"])
    test = pd.read_parquet(tmp_path / "study" / "runs" / "nih" / "densenet121" / "predictions" / "internal.parquet")
    estimable = [lab for lab in LABELS if test[f"y_{lab}"].nunique() == 2]
    assert str(row["labels"]).split("; ") == estimable  # the mean names the labels it is over
    auc = pd.read_csv(results / "auc.csv").set_index("label")
    assert row["mean_auc"] == pytest.approx(auc.loc[estimable, "auc"].mean())
    assert pd.isna(row["gap"])  # no external set: no gap

    page = (results / "report.html").read_text(encoding="utf-8")
    headings = re.findall(r"<h[23][^>]*>([^<]+)</h[23]>", page)
    assert headings[:2] == ["Results", "Findings"]
    assert not re.findall(r"<(h[23])[^>]*>([^<]*)</\1>\s*(?=<h[23]|</body>)", page)  # no empty heading
    assert "Error review" not in headings  # --no-review: no heading at all
    assert not any("Borderline" in h for h in headings)  # nothing truth-based on real data
    assert "true cardiothoracic ratio is unknown" in page  # one line says why
    assert pd.read_csv(results / "borderline.csv").shape[0] == 0
    checklist = pd.read_csv(results / "tripod_ai.csv", dtype={"sub_item": str}).set_index("sub_item")
    assert "Data_Entry_2017_v2020.csv.gz sha256" in checklist.loc["5a", "content"]
