"""Issue 12: ``cxrgen status`` tells each state of a run from the study folder's files alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from cxrgen.learn.module import append_epoch_row
from cxrgen.runner.launch import Submission, write_run_job, write_submission
from cxrgen.runner.status import counts, study_status
from cxrgen.study.config import Configuration, StudyConfig, dump_resolved
from cxrgen.study.layout import StudyDir
from helpers.faults import cxrgen
from helpers.training import tiny_study

NAMES = ("done", "failed", "running", "queued", "idle")
ERROR = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def _epoch(folder: Path, epoch: int, auc: float, seconds: float) -> None:
    row: dict[str, float | int] = {"epoch": epoch, "step": 4 * epoch, "train_loss": 0.5, "val_loss": 0.6,
                                   "val_auc_mean": auc, "seconds": seconds}  # fmt: skip
    append_epoch_row(folder / "metrics.csv", row)


@pytest.fixture
def study(tmp_path: Path) -> tuple[StudyConfig, Path]:
    """Five runs, one per state; each file written by the code that writes it in a real study."""
    base = tiny_study(tmp_path / "study", max_epochs=5)
    config = base.model_copy(
        update={"configurations": [Configuration(name=n, train=["a"], internal=["a"]) for n in NAMES]}
    )
    out = config.out
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(dump_resolved(config))
    arch = config.architectures[0]
    runs = {name: StudyDir(out).run(name, arch) for name in NAMES}
    folders = {name: run.path for name, run in runs.items()}
    submission = Submission(launcher="submitit-local", stages={"runs": ["101", "102", "103", "104"]})
    for job_id, name in zip(("101", "102", "103", "104"), NAMES, strict=False):
        log = str(out / "jobs" / job_id / f"{job_id}_0_log.err")
        submission.runs[f"{name}/{arch}"] = {"job_id": job_id, "log": log}
    write_submission(StudyDir(out), submission)
    for name in ("done", "failed", "running"):
        folders[name].mkdir(parents=True)
    # done: two epochs, trained, predicted, evaluated.
    _epoch(folders["done"], 1, 0.61, 10.0)
    _epoch(folders["done"], 2, 0.72, 12.0)
    (folders["done"] / "done.json").write_text(json.dumps({"epochs": 2}))
    (folders["done"] / "predictions").mkdir()
    (folders["done"] / "predictions" / "internal.parquet").write_bytes(b"")
    pd.DataFrame({"label": ["Left"], "auc": [0.7]}).to_csv(folders["done"] / "auc.csv", index=False)
    # failed: one epoch, then an error recorded by its job.
    _epoch(folders["failed"], 1, 0.55, 20.0)
    write_run_job(runs["failed"], "failed", job_id="102", log=submission.runs[f"failed/{arch}"]["log"], error=ERROR)
    # running: two epochs so far, 30 s each; its job says so.
    _epoch(folders["running"], 1, 0.58, 30.0)
    _epoch(folders["running"], 2, 0.66, 30.0)
    write_run_job(runs["running"], "running", job_id="103", log=submission.runs[f"running/{arch}"]["log"])
    # queued: sent (job 104) but its job has not started; a job.json of an older job does not count.
    folders["queued"].mkdir(parents=True)
    write_run_job(runs["queued"], "failed", job_id="99", log="old.err", error="old error")
    # idle: never sent.
    return config, out


def test_status_tells_every_state(study: tuple[StudyConfig, Path]) -> None:
    config, out = study
    arch = config.architectures[0]
    status = study_status(out).set_index("run")
    assert list(status.index) == [f"{name}/{arch}" for name in NAMES]
    states = status["state"].to_dict()
    assert states == {f"done/{arch}": "done", f"failed/{arch}": "failed", f"running/{arch}": "running",
                      f"queued/{arch}": "queued", f"idle/{arch}": "not started"}  # fmt: skip
    assert counts(status.reset_index()) == {"done": 1, "running": 1, "queued": 1, "failed": 1, "not started": 1,
                                            "unreadable": 0}  # fmt: skip
    done, failed, running = (status.loc[f"{n}/{arch}"] for n in ("done", "failed", "running"))
    assert (done["epoch"], done["best_val_auc"], done["sec_per_epoch"]) == (2, 0.72, 11.0)
    assert math.isnan(done["eta_s"])
    assert failed["error"] == ERROR and failed["job_id"] == "102" and failed["log"].endswith("102_0_log.err")
    assert (running["epoch"], running["best_val_auc"], running["eta_s"], running["job_id"]) == (2, 0.66, 90.0, "103")
    queued = status.loc[f"queued/{arch}"]
    assert queued["job_id"] == "104" and queued["error"] == "" and queued["log"].endswith("104_0_log.err")
    idle = status.loc[f"idle/{arch}"]
    assert idle["job_id"] == "" and idle["epoch"] == 0


def test_status_command_prints_the_table(study: tuple[StudyConfig, Path]) -> None:
    config, out = study
    result = cxrgen("status", out, cwd=out)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if "/" + config.architectures[0] in line}
    assert "1 done, 1 running, 1 queued, 1 failed, 1 not started" in " ".join(result.stdout.split())
    assert " failed " in lines[f"failed/{config.architectures[0]}"] and "CUDA out of memory" in result.stdout
    assert " not started " in lines[f"idle/{config.architectures[0]}"]


def test_status_of_a_folder_that_is_no_study(tmp_path: Path) -> None:
    result = cxrgen("status", tmp_path, cwd=tmp_path)
    assert result.returncode == 1 and "no config.yaml" in result.stderr


DAMAGES = {
    "job.json cut short": ("running", "job.json", '{"state": "running", "job_id": "1', "job.json, Unterminated"),
    "job.json empty": ("running", "job.json", "", "job.json, empty file"),
    "job.json a list": ("failed", "job.json", '["failed"]', "job.json, a JSON list, expected an object"),
    "job.json without state": ("failed", "job.json", '{"job_id": "102"}', "job.json, no 'state' string (found None)"),
    "done.json cut short": ("done", "done.json", '{"epo', "done.json, Unterminated string"),
    "metrics.csv not numbers": ("running", "metrics.csv", "epoch,val_auc_mean,seconds\n1,0.5,x\n", "metrics.csv, "),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_run_file_is_shown_unreadable_beside_the_healthy_runs(
    study: tuple[StudyConfig, Path], damage: str
) -> None:
    config, out = study
    arch = config.architectures[0]
    broken, file_name, text, reason = DAMAGES[damage]
    (StudyDir(out).run(broken, arch).path / file_name).write_text(text)
    status = study_status(out).set_index("run")
    assert list(status.index) == [f"{name}/{arch}" for name in NAMES]  # every run still listed
    expected = {"done": "done", "failed": "failed", "running": "running", "queued": "queued", "idle": "not started"}
    expected[broken] = "unreadable"
    assert status["state"].to_dict() == {f"{name}/{arch}": state for name, state in expected.items()}
    assert status.loc[f"{broken}/{arch}", "error"].startswith(f"unreadable ({reason}")
    result = cxrgen("status", out, cwd=out)
    assert result.returncode == 0, result.stderr
    assert "1 unreadable" in " ".join(result.stdout.split()) and "Traceback" not in result.stderr
    assert f"unreadable ({file_name}," in " ".join(result.stdout.split())
