"""Sex shares where a dataset records no sex (MIMIC-CXR-JPG, VinDr-CXR): undefined, never "0 % female"."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import cast

import pandas as pd

from cxrgen.data.cohort import describe
from cxrgen.report.inputs import StudyInputs
from cxrgen.report.tripod import _shift_text, development_table
from cxrgen.study.config import StudyConfig


def _manifest() -> pd.DataFrame:
    """``rec``: 3 F, 1 M, 1 unknown of 5 images; ``none``: sex never recorded."""
    return pd.DataFrame({
        "image_id": [f"i{i}" for i in range(8)], "patient_id": [f"p{i}" for i in range(8)],
        "dataset": ["rec"] * 5 + ["none"] * 3, "sex": ["F", "F", "F", "M", "U", "U", "U", "U"],
        "age": [50, 60, 70, 80, 90, float("nan"), float("nan"), float("nan")],
        "view": ["PA"] * 8, "Edema": [1, 0, 0, 1, 0, 1, 0, 0],
    })  # fmt: skip


def test_cohort_shares_are_of_all_images_and_undefined_without_a_recorded_sex() -> None:
    table = describe(_manifest(), None, ["Edema"]).set_index("dataset")
    assert (table.loc["rec", "female_pct"], table.loc["rec", "male_pct"]) == (60.0, 20.0)  # unknown: the other 20
    assert math.isnan(table.loc["none", "female_pct"]) and math.isnan(table.loc["none", "male_pct"])


def test_development_table_and_its_prose_say_not_recorded() -> None:
    config = StudyConfig.model_validate({
        "name": "sex", "out": "/nonexistent/sex", "labels": ["Edema"],
        "datasets": {d: {"reader": "nih", "root": f"/nonexistent/{d}"} for d in ("rec", "none")},
        "configurations": [{"name": "c1", "train": ["rec"], "internal": ["rec"], "external": ["none"]}],
    })  # fmt: skip
    inputs = cast(StudyInputs, SimpleNamespace(config=config, manifest=_manifest()))
    table = development_table(inputs).set_index("dataset")
    assert table.loc["rec", "female_pct"] == 60.0
    assert math.isnan(table.loc["none", "female_pct"])
    prose = _shift_text(table.reset_index(), config)
    assert "rec (development and internal testing: c1): age 70.0 ± 15.8, female 60.0 %" in prose
    assert "none (external testing: c1): age not recorded, sex not recorded, views PA 100 %" in prose
