"""Issue 14, unfinished runs are not results: a run stopped by SIGTERM (no ``done.json``) through the real CLI.

``cxrgen predict`` refuses its half-trained ``best.ckpt`` unless ``--allow-unfinished``; files made that way carry
``unfinished: true`` and the report names them; a configured test set without predictions is named too.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from cxrgen.evaluate import UNFINISHED_KEY
from cxrgen.fileio import parquet_metadata
from cxrgen.synthetic import write_synthetic
from faults_helpers import ARCH, changed, cxrgen, error_lines, start, study_yaml, wait_for

LONG_TRAIN = {"pretrained": False, "max_epochs": 200, "patience": 1000, "batch_size": 16, "num_workers": 0,
              "accelerator": "cpu", "devices": 1}  # fmt: skip
PREDICT = ("predict", "tiny.yaml", "--configuration", "c1", "--arch", ARCH)


def flat(text: str) -> str:
    """Standard error with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.mark.slow
def test_predict_refuses_an_unfinished_run_and_the_report_names_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic(data, seed=0, scale=0.05, image_size=64)
    (data / "tiny.yaml").write_text(study_yaml(train=LONG_TRAIN))
    assert cxrgen("prepare", "tiny.yaml", "--workers", "1", cwd=data).returncode == 0
    run = data / "runs" / "tiny" / "runs" / "c1" / ARCH
    train = start("train", "tiny.yaml", "--configuration", "c1", "--arch", ARCH, cwd=data)
    assert wait_for(train, changed(run / "checkpoints" / "last.ckpt"), timeout=300)
    os.kill(train.pid, signal.SIGTERM)
    train.communicate(timeout=120)
    assert train.returncode == 128 + signal.SIGTERM and not (run / "done.json").exists()

    refused = cxrgen(*PREDICT, cwd=data)
    assert refused.returncode == 1  # before the fix: 0, predictions of a half-trained model, silently
    (line,) = error_lines(refused)
    assert f"run c1/{ARCH} is unfinished (no done.json in" in line and "--allow-unfinished" in line, line
    assert not list(run.glob("predictions/*.parquet"))

    allowed = cxrgen(*PREDICT, "--allow-unfinished", cwd=data)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    files = sorted(run.glob("predictions/*.parquet"))
    assert [f.stem for f in files] == ["internal", "mimic"]
    assert all(parquet_metadata(f)[UNFINISHED_KEY] == "true" for f in files)

    (run / "predictions" / "mimic.parquet").unlink()
    report = cxrgen("report", "runs/tiny", "--no-review", cwd=data)
    assert report.returncode == 0, report.stderr[-3000:]
    text = flat(report.stderr)
    assert f"predictions of the unfinished run c1/{ARCH}" in text, text[-3000:]
    assert f"test set 'mimic' of run c1/{ARCH} is configured but" in text, text[-3000:]
