"""A validation set without one class through the report's shift tables: NaN with status "no threshold" (issue 27)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.report.inputs import find_predictions, load_inputs
from cxrgen.report.shift_tables import write_shift_results
from cxrgen.study.workspace import Study
from helpers.report_study import LABELS, make_study, predictions


def test_operating_points_of_a_validation_set_without_positives(tmp_path: Path) -> None:
    study = make_study(tmp_path, archs=("densenet121",), patients=40, reference=False)
    opened = Study.open(study)
    frame = pd.read_parquet(study / "manifest.parquet").merge(pd.read_parquet(study / "splits.parquet"))
    rng = np.random.default_rng(1)
    for conf in opened.config.configurations:
        val = predictions(frame.loc[frame["dataset"].isin(conf.train)], 1.6, rng)
        val[f"y_{LABELS[1]}"] = 0.0  # Edema: no positive at home, so no threshold can be chosen
        val.to_parquet(opened.run(conf.name, "densenet121").validation)
    inputs = load_inputs(study)
    write_shift_results(inputs, find_predictions(inputs), tmp_path)
    op = pd.read_csv(tmp_path / "operating_points.csv")
    none = op[op["label"] == LABELS[1]]
    assert (none["status"] == "no threshold").all() and none["threshold"].isna().all()
    assert none[["value", "ci_low", "ci_high", "tp", "fp", "tn", "fn"]].isna().all().all()  # no made-up counts
    chosen = op[op["label"] == LABELS[0]]
    assert (chosen["status"] == "ok").all() and chosen["value"].notna().any()
