"""Issue 14, signals: real SIGTERM and SIGINT sent to the real ``cxrgen`` command at a chosen moment.

Every test asserts that the command really was interrupted before it finished (its exit status and the absence of
the completion marker), then that it said so in one line and left a state that a rerun continues from.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cxrgen.learn.checkpoints import load_checkpoint
from cxrgen.synthetic import write_synthetic
from helpers.faults import ARCH, changed, cxrgen, error_lines, start, study_yaml, wait_for
from helpers.processes import children, descendants, kill_all, wait_gone

TRAIN = {"pretrained": False, "max_epochs": 3, "patience": 10, "batch_size": 16, "num_workers": 0,
         "accelerator": "cpu", "devices": 1}  # fmt: skip
SIGTERM_EXIT, SIGINT_EXIT = 128 + signal.SIGTERM, 128 + signal.SIGINT


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def stop(proc: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    """Send ``signum`` to a running command; its exit status and standard error."""
    assert proc.poll() is None, "the command ended before the signal could be sent"
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("signals") / "data"
    write_synthetic(folder, seed=0, scale=0.05, image_size=64)
    return folder


def write_study(data: Path, name: str) -> Path:
    (data / f"{name}.yaml").write_text(study_yaml(out=f"runs/{name}", train=TRAIN))
    return data / "runs" / name / "runs" / "c1" / ARCH


@pytest.mark.slow
def test_sigterm_during_train_exits_143_naming_run_and_epoch_and_resumes(data: Path) -> None:
    run = write_study(data, "train")
    ok(cxrgen("prepare", "train.yaml", "--workers", "1", cwd=data))
    last = run / "checkpoints" / "last.ckpt"
    proc = start("train", "train.yaml", "--configuration", "c1", "--arch", ARCH, cwd=data)
    assert wait_for(proc, changed(last)), proc.stderr.read() if proc.stderr else ""
    code, err = stop(proc, signal.SIGTERM)

    assert code == SIGTERM_EXIT, err[-3000:]  # before the fix: 0, as if the run had finished
    assert not (run / "done.json").exists()
    assert len(pd.read_csv(run / "metrics.csv")) < 3  # really stopped before its last epoch
    lines = error_lines(subprocess.CompletedProcess(proc.args, code, "", err))
    assert len(lines) == 1, err[-3000:]
    assert re.fullmatch(
        rf"error: run c1/{ARCH} stopped by SIGTERM in epoch [1-3] of 3, unfinished \(no done\.json\); "
        rf"rerun to resume from .*last\.ckpt \(the last finished epoch\)",
        lines[0],
    ), lines[0]
    assert "Traceback" not in err
    assert load_checkpoint(last)["epoch"] >= 0  # a complete checkpoint to resume from

    ok(cxrgen("train", "train.yaml", "--configuration", "c1", "--arch", ARCH, cwd=data))
    assert (run / "done.json").exists()
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3]


@pytest.mark.slow
def test_sigterm_during_study_exits_143_without_results(data: Path) -> None:
    run = write_study(data, "study")
    proc = start("study", "study.yaml", "--workers", "1", cwd=data)
    assert wait_for(proc, changed(run / "checkpoints" / "last.ckpt"), timeout=300)
    code, err = stop(proc, signal.SIGTERM)

    assert code == SIGTERM_EXIT, err[-3000:]
    assert not (run / "done.json").exists()
    assert not list(run.glob("predictions/*.parquet"))
    assert any(f"run c1/{ARCH} stopped by SIGTERM in epoch" in line for line in err.splitlines()), err[-3000:]

    ok(cxrgen("study", "study.yaml", "--workers", "1", cwd=data, timeout=600))
    assert (run / "done.json").exists() and (run / "auc.csv").exists()


@pytest.mark.slow
def test_ctrl_c_during_report_figures_exits_130(data: Path) -> None:
    if not (data / "runs" / "study" / "runs" / "c1" / ARCH / "done.json").exists():
        write_study(data, "study")
        ok(cxrgen("study", "study.yaml", "--workers", "1", cwd=data, timeout=600))
    results = data / "runs" / "study" / "results"
    proc = start("report", "runs/study", cwd=data)
    # cohort.csv is the last file before the first figure is drawn.
    assert wait_for(proc, changed(results / "cohort.csv"), timeout=300)
    code, err = stop(proc, signal.SIGINT)

    assert code == SIGINT_EXIT, err[-3000:]  # before the fix: swallowed, exit 0 with the report incomplete
    assert not (results / "report.html").exists()
    assert any(line == "error: stopped by SIGINT" for line in err.splitlines()), err[-3000:]


@pytest.mark.slow
def test_sigterm_to_prepare_ends_its_pool_workers_forkserver_and_resource_tracker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic(data, seed=0, scale=0.2, image_size=128)  # about 470 images: two chunks, so a real pool
    (data / "tiny.yaml").write_text(study_yaml(preprocess={"size": 32, "engine": "skimage"}))
    proc = start("prepare", "tiny.yaml", "--workers", "2", cwd=data)
    started: set[int] = set()
    try:
        # Pool workers are the forkserver's children: processes below the command that are not its own children.
        # Signalled as soon as one exists, while the pool has seconds of work ahead.
        assert wait_for(proc, lambda: bool(descendants(proc.pid) - children(proc.pid))), "no process pool started"
        started = descendants(proc.pid)
        code, err = stop(proc, signal.SIGTERM)

        assert code == SIGTERM_EXIT, err[-3000:]  # before the fix: killed by the signal (-15), no cleanup
        assert "error: stopped by SIGTERM" in err.splitlines(), err[-3000:]
        assert not (data / "runs" / "tiny" / "cache" / "chexpert-32-skimage" / "meta.json").exists()
        assert len(started) >= 3  # the forkserver, the resource tracker, at least one worker
        assert wait_gone(started) == set(), f"still running after their parent ended: {sorted(started)}"
    finally:
        kill_all(started | descendants(proc.pid))
    ok(cxrgen("prepare", "tiny.yaml", "--workers", "1", cwd=data))
    assert (data / "runs" / "tiny" / "cache" / "chexpert-32-skimage" / "meta.json").exists()
