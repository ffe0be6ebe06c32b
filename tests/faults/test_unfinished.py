"""Issue 14, unfinished runs are not results: a run stopped by SIGTERM (no ``done.json``) through the real CLI.

``cxrgen predict`` refuses its half-trained ``best.ckpt`` unless ``--allow-unfinished``; files made that way carry
``unfinished: true``, and the report marks them in ``auc.csv``, ``comparisons.csv`` and ``report.html``; a
configured test set without predictions is named in ``missing.csv`` and at the top of the page. One stopped run
(module fixture) serves every test.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.metrics.evaluate import UNFINISHED_KEY
from cxrgen.synthetic import write_synthetic
from cxrgen.utils.fileio import parquet_metadata
from helpers.faults import ARCH, changed, cxrgen, error_lines, start, study_yaml, wait_for

LONG_TRAIN = {"pretrained": False, "max_epochs": 200, "patience": 1000, "batch_size": 16, "num_workers": 0,
              "accelerator": "cpu", "devices": 1}  # fmt: skip
PREDICT = ("predict", "tiny.yaml", "--configuration", "c1", "--arch", ARCH)
#: A finished model copied in beside the unfinished one (predictions made elsewhere have no marker).
OTHER = "elsewhere"

pytestmark = pytest.mark.slow


def flat(text: str) -> str:
    """Standard error with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny study whose only run was stopped by SIGTERM after its first epoch: ``last.ckpt``, no ``done.json``."""
    data = tmp_path_factory.mktemp("unfinished")
    write_synthetic(data, seed=0, scale=0.05, image_size=48, hospitals=("chexpert", "mimic"))
    (data / "tiny.yaml").write_text(study_yaml(train=LONG_TRAIN))
    assert cxrgen("prepare", "tiny.yaml", "--workers", "1", cwd=data).returncode == 0
    run = data / "runs" / "tiny" / "runs" / "c1" / ARCH
    train = start("train", "tiny.yaml", "--configuration", "c1", "--arch", ARCH, cwd=data)
    assert wait_for(train, changed(run / "checkpoints" / "last.ckpt"), timeout=300)
    os.kill(train.pid, signal.SIGTERM)
    train.communicate(timeout=120)
    assert train.returncode == 128 + signal.SIGTERM and not (run / "done.json").exists()
    return data


def test_predict_refuses_an_unfinished_run_unless_allowed(stopped: Path) -> None:
    run = stopped / "runs" / "tiny" / "runs" / "c1" / ARCH
    refused = cxrgen(*PREDICT, cwd=stopped)
    assert refused.returncode == 1  # before the fix: 0, predictions of a half-trained model, silently
    (line,) = error_lines(refused)
    assert f"run c1/{ARCH} is unfinished (no done.json in" in line and "--allow-unfinished" in line, line
    assert not list(run.glob("predictions/*.parquet"))

    allowed = cxrgen(*PREDICT, "--allow-unfinished", cwd=stopped)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    files = sorted(run.glob("predictions/*.parquet"))
    assert [f.stem for f in files] == ["internal", "mimic"]
    assert all(parquet_metadata(f)[UNFINISHED_KEY] == "true" for f in files)


def test_report_marks_unfinished_runs_and_names_missing_test_sets(stopped: Path) -> None:
    study = stopped / "runs" / "tiny"
    predictions = study / "runs" / "c1" / ARCH / "predictions"
    if not (predictions / "internal.parquet").is_file():  # run alone: predict as the test above does
        assert cxrgen(*PREDICT, "--allow-unfinished", cwd=stopped).returncode == 0
    (predictions / "mimic.parquet").unlink()
    other = pd.read_parquet(predictions / "internal.parquet")  # a finished model's file, scores slightly changed
    for column in [c for c in other.columns if c.startswith("p_")]:
        other[column] = np.sqrt(other[column])
    (study / "runs" / "c1" / OTHER / "predictions").mkdir(parents=True)
    other.to_parquet(study / "runs" / "c1" / OTHER / "predictions" / "internal.parquet", index=False)

    report = cxrgen("report", "runs/tiny", "--no-review", cwd=stopped)
    assert report.returncode == 0, report.stderr[-3000:]
    text = flat(report.stderr)
    assert f"predictions of the unfinished run c1/{ARCH}" in text, text[-3000:]
    assert f"test set 'mimic' of run c1/{ARCH} is configured but" in text, text[-3000:]

    results = study / "results"
    auc = pd.read_csv(results / "auc.csv")
    assert auc.groupby("arch")["unfinished"].agg(["all", "any"]).to_dict("index") == {
        ARCH: {"all": True, "any": True}, OTHER: {"all": False, "any": False}}  # fmt: skip
    assert set(auc["test_set"]) == {"internal"} and len(auc) == 2 * 5  # two files, five labels; no mimic row
    comparisons = pd.read_csv(results / "comparisons.csv")
    assert len(comparisons) == 5 and set(comparisons["family"]) == {"architectures"}
    assert comparisons["unfinished"].all()  # one side unfinished
    table1 = pd.read_csv(results / "table1.csv").set_index("arch")["unfinished"].to_dict()
    assert table1 == {ARCH: True, OTHER: False}

    missing = pd.read_csv(results / "missing.csv")
    assert missing.to_dict("records") == [
        {"configuration": "c1", "arch": ARCH, "seed": 0, "test_set": "mimic", "kind": "external",
         "expected": f"runs/c1/{ARCH}/predictions/mimic.parquet", "reason": "predictions file missing"}
    ]  # fmt: skip

    page = (results / "report.html").read_text(encoding="utf-8")
    notices = page[: page.index("<h2")]  # before the first section
    assert f'<b>Unfinished runs</b> <span class="unfinished">unfinished</span>: c1/{ARCH}.' in notices
    assert OTHER not in notices
    assert "Configured test sets without predictions</b> (1)" in notices
    assert f"c1/{ARCH}, seed 0, test set <b>mimic</b>: runs/c1/{ARCH}/predictions/mimic.parquet" in notices
    assert page.count('data-unfinished="true"') == 1 and f'<td class="key">{OTHER}</td>' in page  # Table 1
    assert f'<td class="key" data-unfinished="true">{ARCH} <span class="unfinished">unfinished</span></td>' in page
    assert f'/{ARCH} <span class="unfinished">unfinished</span> on internal' in page  # the comparison's side
