"""The trust flag on a real model (issue 24): trained where the device shortcut pays, tested where it is reversed.

A tiny timm CNN (``test_byobnet``, 64 px, 3 epochs) trained at the NIH-like site of the shipped world learns to
call pacemakers Cardiomegaly (``test_shortcut_learned.py``). The external set is the NIH-like site of the reversed
world, written with another seed (no training patient in it), where pacemakers come with the *absence* of
Cardiomegaly: the true AUC falls below home while the confidence-based estimates stay high, and the flag must
say so in ``results/estimates.csv``, with labels used only for the truth beside the estimate.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cxrgen.cli import app
from cxrgen.report.estimates import BIG_ERROR

runner = CliRunner()

STUDY = """\
name: flag
out: study
datasets:
  nih: {reader: nih, root: shortcut/nih}
  nih_reversed: {reader: nih, root: reversed/nih}
labels: [Cardiomegaly]
splits:
  nih: {method: random, fractions: {train: 0.5, val: 0.25, test: 0.25}, seed: 0}
preprocess: {clahe: false, engine: opencv, size: 64}
architectures: [test_byobnet]
train: {batch_size: 32, lr: 3.0e-3, max_epochs: 3, patience: 3, flip: 0.0, pretrained: false, seed: 0, num_workers: 0}
evaluation:
  bootstrap: 50
  estimate: {labelled: true, methods: [cbpe, atc, doc, em_prevalence]}
configurations:
  - {name: nih, train: [nih], internal: [nih], external: [nih_reversed]}
"""


def _cli(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_the_flag_rises_when_the_learned_shortcut_reverses(tmp_path: Path) -> None:
    common = ["--image-size", "64", "--hospitals", "nih", "--workers", "1"]
    _cli("synthesize", str(tmp_path / "shortcut"), "--scale", "2", *common)
    _cli("synthesize", str(tmp_path / "reversed"), "--world", "reversed", "--seed", "1", "--scale", "1", *common)
    (tmp_path / "study.yaml").write_text(STUDY, encoding="utf-8")
    _cli("study", str(tmp_path / "study.yaml"), "--workers", "1")
    _cli("report", str(tmp_path / "study"), "--no-review")
    table = pd.read_csv(tmp_path / "study" / "results" / "estimates.csv")
    auc = table.loc[(table["test_set"] == "nih_reversed") & (table["label"] == "Cardiomegaly")
                    & (table["metric"] == "auc")].set_index("method")  # fmt: skip
    methods = ["cbpe", "atc", "doc", "em_prevalence"]
    assert set(methods) <= set(auc.index)
    true_auc, home_auc = auc.loc["cbpe", "true_value"], auc.loc["internal_auc", "estimate"]
    assert true_auc < home_auc - 0.1, (true_auc, home_auc)  # the shortcut stopped paying
    assert auc.loc[methods, "flag"].astype(bool).all(), auc[["estimate", "true_value", "flag", "flag_reasons"]]
    # what the flag is for: an estimate too high by more than the report counts as a failure
    assert auc.loc["cbpe", "estimate"] - true_auc > BIG_ERROR
