"""Issue 14, training batches of one: a training set of ``k * batch_size + 1`` images through the real ``cxrgen train``.

On a 32-pixel input the tiny architecture's last feature map is 1 x 1, so a batch of one gives BatchNorm a single
value per channel, which it refuses in training mode ("Expected more than 1 value per channel").
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxrgen.synthetic import write_synthetic
from helpers.faults import ARCH, cxrgen, study_yaml


@pytest.mark.slow
def test_a_last_training_batch_of_one_image_is_dropped_not_fatal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic(data, seed=0, scale=0.05, image_size=64)
    (data / "tiny.yaml").write_text(study_yaml())
    assert cxrgen("prepare", "tiny.yaml", "--workers", "1", cwd=data).returncode == 0
    out = data / "runs" / "tiny"
    splits = pd.read_parquet(out / "splits.parquet")
    excluded = set(pd.read_csv(out / "excluded.csv")["image_id"].astype(str))
    train = splits[(splits["dataset"] == "chexpert") & (splits["split"] == "train")]
    n_train = int((~train["image_id"].astype(str).isin(excluded)).sum())
    assert n_train >= 3
    batch = n_train - 1  # two batches: n - 1 images, then one
    settings = {"pretrained": False, "max_epochs": 1, "batch_size": batch, "num_workers": 0, "accelerator": "cpu",
                "devices": 1}  # fmt: skip
    (data / "tiny.yaml").write_text(study_yaml(train=settings))

    result = cxrgen("train", "tiny.yaml", "--configuration", "c1", "--arch", ARCH, cwd=data)

    assert result.returncode == 0, result.stderr[-3000:]  # before the fix: Expected more than 1 value per channel
    run = out / "runs" / "c1" / ARCH
    assert (run / "done.json").exists()
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["step"].tolist() == [1]  # one optimizer step: the batch of one was dropped, the other kept
