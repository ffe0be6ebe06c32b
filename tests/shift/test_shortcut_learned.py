"""The device shortcut, learned: a real model trained at the NIH-like site of each world, through the CLI.

In the shortcut world most Cardiomegaly studies there carry a pacemaker, so a CNN trained there learns to call
pacemakers Cardiomegaly and its false-positive rate among device-present negatives jumps; in the control world
(``synthesize --no-shortcut``), pacemakers are as frequent without Cardiomegaly as with it, and the jump is gone.
A tiny timm CNN (``test_byobnet``) trained 3 epochs at 64 px is enough (about 10 s per world on 2 cores), and the
internal test split is half the hospital so that enough negatives carry a device.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cxrgen.cli import app
from cxrgen.study.layout import DatasetDir

runner = CliRunner()

STUDY = """\
name: {world}
out: study
datasets:
  nih: {{reader: nih, root: data/nih}}
labels: [Cardiomegaly]
splits:
  nih: {{method: random, fractions: {{train: 0.35, val: 0.15, test: 0.5}}, seed: 0}}
preprocess: {{clahe: false, engine: opencv, size: 64}}
architectures: [test_byobnet]
train: {{batch_size: 32, lr: 3.0e-3, max_epochs: 3, patience: 3, flip: 0.0, pretrained: false, seed: 0, num_workers: 0}}
evaluation: {{bootstrap: 200}}
configurations:
  - {{name: nih, train: [nih], internal: [nih]}}
"""


def _cli(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output


def _trained_world(root: Path, world: str) -> pd.Series:
    """Synthesize the NIH-like hospital, train and predict, report; the Cardiomegaly row of shortcut.csv."""
    control = ["--no-shortcut"] if world == "control" else []
    _cli("synthesize", str(root / "data"), "--scale", "2", "--image-size", "64", "--hospitals", "nih",
         "--workers", "1", *control)  # fmt: skip
    (root / "study.yaml").write_text(STUDY.format(world=world), encoding="utf-8")
    _cli("study", str(root / "study.yaml"), "--workers", "1")
    _cli("report", str(root / "study"), "--no-review")
    table = pd.read_csv(root / "study" / "results" / "shortcut.csv")
    (row,) = [r for _, r in table.iterrows() if r["label"] == "Cardiomegaly" and r["test_set"] == "internal"]
    # the negatives counted are the test split's, with the device the writer drew (truth.parquet)
    columns = ["image_id", "dataset", "path", "Cardiomegaly"]
    manifest = pd.read_parquet(root / "study" / "manifest.parquet", columns=columns)
    test = manifest.merge(pd.read_parquet(root / "study" / "splits.parquet"), on=["image_id", "dataset"])
    test = test.loc[(test["split"] == "test") & (test["Cardiomegaly"] == 0)]
    device = test.merge(pd.read_parquet(DatasetDir(root / "data" / "nih").truth), on="path")["device"].astype(bool)
    assert (row["n_neg_device"], row["n_neg_no_device"]) == (device.sum(), (~device).sum())
    assert row["device_source"].startswith("truth.parquet")
    return row


@pytest.mark.slow
def test_trained_model_takes_the_shortcut_only_where_it_exists(tmp_path: Path) -> None:
    shortcut = _trained_world(tmp_path / "shortcut", "shortcut")
    control = _trained_world(tmp_path / "control", "control")
    assert shortcut["n_neg_device"] >= 10 and control["n_neg_device"] >= 10
    # shortcut world: device-present negatives are called Cardiomegaly far more often, interval above 0
    assert shortcut["fpr_device"] > shortcut["fpr_no_device"] + 0.2
    assert shortcut["detected"] and shortcut["ci_low"] > 0
    # control world: no such rise (the interval reaches 0 or lies below it)
    assert not control["detected"] and control["ci_low"] <= 0
    assert control["difference"] < shortcut["ci_low"]
