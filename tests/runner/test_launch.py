"""Issue 12: every run a submitit job. The same tiny two-configuration study through ``--launcher local`` and
``--launcher submitit-local`` (real subprocess jobs), a run job SIGKILLed mid-training and resubmitted with the rest
of the study, a second submission refused while jobs live, and the sbatch script of the paper study.

Issue 27: the SIGKILL goes to the job id that ``jobs.json`` records and ``cxrgen status`` shows (submitit's local
controller process), and must end the training process too; a recorded job id that another process took since does
not count as a live job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cxrgen.runner.launch import pending_runs, sbatch_script
from cxrgen.study.config import load_study
from cxrgen.study.layout import StudyDir
from cxrgen.study.workspace import Study
from cxrgen.synthetic import write_synthetic
from helpers.faults import ARCH, ENV, cxrgen, start, study_yaml, wait_for
from helpers.processes import kill_all, wait_gone

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATIONS = [
    {"name": "c1", "train": ["chexpert"], "internal": ["chexpert"], "external": ["mimic"]},
    {"name": "c2", "train": ["nih"], "internal": ["nih"], "external": ["mimic"]},
]
AFTER_IMPORTS = """
import sys
import cxrgen.cli, cxrgen.study.config, cxrgen.runner.launch, lightning.pytorch
print("imported", flush=True)
sys.stdin.readline()
sys.argv[0] = "cxrgen"
cxrgen.cli.main()
"""
LAUNCHER = {"cache_shards": 2, "review": False, "cpus_per_task": 1, "gpus_per_node": 0}


def two_configurations(out: str) -> str:
    return study_yaml(out, ("chexpert", "nih", "mimic"), configurations=CONFIGURATIONS, launcher=LAUNCHER)


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("launch") / "data"
    write_synthetic(data, seed=0, scale=0.05, image_size=64)
    for name in ("local", "submitit"):
        (data / f"{name}.yaml").write_text(two_configurations(f"runs/{name}"))
    return data


@pytest.fixture(scope="module")
def local_study(data: Path) -> Path:
    """The reference: today's sequential study in one process, then its report (no review)."""
    ok(cxrgen("study", "local.yaml", "--workers", "1", cwd=data, timeout=600))
    ok(cxrgen("report", "runs/local", "--no-review", cwd=data, timeout=300))
    return data / "runs" / "local"


def _weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    return dict(torch.load(run / "checkpoints" / name, weights_only=True)["state_dict"])


@pytest.mark.slow
def test_submitit_local_run_killed_resumes_and_gives_the_same_results_as_local(data: Path, local_study: Path) -> None:
    """One submission killed mid-training, then the whole study submitted: the same numbers as the local study.

    (One test, not two, so the study's verify, cache and report jobs run once less: the suite is long.)
    """
    out = data / "runs" / "submitit"
    run = StudyDir(out).run("c1", ARCH)
    # A second submission, imports done beforehand, is let go while the run job runs: it must be refused.
    second = subprocess.Popen(
        [sys.executable, "-c", AFTER_IMPORTS, "study", "submitit.yaml", "--launcher", "submitit-local"], cwd=data,
        env=ENV, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert second.stdout is not None and second.stdout.readline().strip() == "imported"
    proc = start("study", "submitit.yaml", "--launcher", "submitit-local", "--only", f"c1/{ARCH}", cwd=data)
    assert wait_for(proc, lambda: run.job.exists(), timeout=600)
    _, err = second.communicate("go\n", timeout=120)
    job = json.loads(run.job.read_text())
    refused = [line for line in err.splitlines() if line.startswith("error:")]
    assert second.returncode == 1 and len(refused) == 1 and f"live jobs ({job['job_id']})" in refused[0], err
    assert wait_for(proc, run.last_checkpoint.exists, timeout=600)
    recorded = json.loads(StudyDir(out).jobs.read_text())["runs"][f"c1/{ARCH}"]["job_id"]
    assert recorded == job["job_id"] != str(job["pid"])  # the job id is the controller; the training its child
    os.kill(int(recorded), signal.SIGKILL)  # what a user kills, in the run's second epoch
    survivors = wait_gone({int(job["pid"])}, timeout=30)
    kill_all(survivors)
    assert not survivors, "the training process outlived its killed job"
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "runs failed" in stderr, stderr[-2000:]
    assert torch.load(run.last_checkpoint, weights_only=True)["epoch"] == 0
    assert not run.done.exists()
    pending = [(c.name, a) for c, a, _ in pending_runs(Study.load(data / "submitit.yaml"))]
    assert pending == [("c1", ARCH), ("c2", ARCH)]  # the killed run and the one never sent
    status = cxrgen("status", "runs/submitit", cwd=data)
    ok(status)
    row = next(line for line in status.stdout.splitlines() if f"c1/{ARCH}" in line)
    assert "failed" in row and job["job_id"] in row

    ok(cxrgen("study", "submitit.yaml", "--launcher", "submitit-local", cwd=data, timeout=900))
    record = json.loads(StudyDir(out).jobs.read_text())
    assert list(record["stages"]) == ["verify", "cache", "runs", "report"]
    assert len(record["stages"]["cache"]) == 2 and sorted(record["runs"]) == [f"c1/{ARCH}", f"c2/{ARCH}"]
    resubmitted = json.loads(run.job.read_text())
    assert resubmitted["state"] == "done" and resubmitted["job_id"] != job["job_id"]
    resumed = Path(resubmitted["log"]).read_text()
    assert "Restoring states from the checkpoint path" in resumed and "last.ckpt" in resumed, resumed[-2000:]
    assert json.loads(StudyDir(out).run("c2", ARCH).job.read_text())["state"] == "done"
    mine, theirs = pd.read_csv(out / "results" / "auc.csv"), pd.read_csv(local_study / "results" / "auc.csv")
    assert len(mine) == 2 * 2 * 5  # configurations x test sets x labels
    pd.testing.assert_frame_equal(mine, theirs)
    reference = local_study / "runs" / "c1" / ARCH
    for name in ("last.ckpt", "best.ckpt"):  # the resumed run reached the uninterrupted run's weights
        theirs_w, mine_w = _weights(reference, name), _weights(run.path, name)
        assert theirs_w.keys() == mine_w.keys()
        assert all(torch.equal(theirs_w[k], mine_w[k]) for k in theirs_w), name
    columns = ["epoch", "step", "train_loss", "val_loss", "val_auc_mean"]
    pd.testing.assert_frame_equal(
        pd.read_csv(run.metrics)[columns], pd.read_csv(reference / "metrics.csv")[columns]
    )
    # Submitting the finished study again would send no run job.
    assert pending_runs(Study.load(data / "submitit.yaml")) == []


def test_sbatch_script_of_the_paper_study_carries_the_launcher_settings(tmp_path: Path) -> None:
    text = (ROOT / "configs" / "paper.yaml").read_text()
    block = "launcher: {partition: gpu, account: lab, qos: normal, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 64,\n"
    block += "           timeout_min: 720, extra: {constraint: a100}}\n"
    (tmp_path / "paper.yaml").write_text(text + block)
    script = sbatch_script(Study.load(tmp_path / "paper.yaml"))
    for line in ("--partition=gpu", "--account=lab", "--qos=normal", "--gpus-per-node=1", "--cpus-per-task=8",
                 "--mem=64GB", "--time=720", "--constraint=a100", "--signal=USR2@90"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script, line
    assert "srun" in script and "submitit.core._submit" in script


@pytest.mark.requires("srun")
def test_sbatch_script_equals_the_one_submitit_submits_on_a_cluster(tmp_path: Path) -> None:
    """Rendering needs no cluster; where ``srun`` exists, the text is the AutoExecutor's own, to the character."""
    from typing import Any

    from cxrgen.runner.launch import make_executor

    (tmp_path / "paper.yaml").write_text((ROOT / "configs" / "paper.yaml").read_text())
    study = Study.load(tmp_path / "paper.yaml")
    executor = make_executor(study, "slurm")
    executor.update_parameters(name=f"cxrgen-{study.config.name}-run")
    slurm: Any = executor._executor
    assert sbatch_script(study) == slurm._make_submission_file_text(slurm._submitit_command_str, "%j")


def test_launcher_keys_are_validated(tmp_path: Path) -> None:
    from cxrgen.study.config import ConfigError

    text = study_yaml("runs/x", launcher={"partitions": "gpu"})
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"launcher\.partitions: unknown key"):
        load_study(tmp_path / "x.yaml")
    (tmp_path / "y.yaml").write_text(study_yaml("runs/y", launcher={"timeout_min": 0}))
    with pytest.raises(ConfigError, match=r"launcher\.timeout_min"):
        load_study(tmp_path / "y.yaml")


def test_a_recorded_local_job_id_taken_by_another_process_is_not_alive(tmp_path: Path) -> None:
    """pid reuse: a live process that is not the recorded job (another start time, or not submitit's) is no job."""
    from cxrgen.runner.launch import Submission, alive_jobs, refuse_if_alive, write_submission
    from cxrgen.utils.processes import process_start

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid = str(other.pid)
        stamp = process_start(other.pid)
        assert stamp is not None
        ours = Submission(launcher="submitit-local", stages={"runs": [pid]}, started={pid: stamp})
        assert alive_jobs(ours) == [pid]  # the very process recorded: alive
        reused = Submission(launcher="submitit-local", stages={"runs": [pid]}, started={pid: stamp + "0"})
        assert alive_jobs(reused) == []  # same id, another process
        unstamped = Submission(launcher="submitit-local", stages={"runs": [pid]})
        assert alive_jobs(unstamped) == []  # an older jobs.json: a command line that is not submitit's
        layout = StudyDir(tmp_path / "study")
        layout.path.mkdir()
        write_submission(layout, reused)
        refuse_if_alive(layout)  # does not raise: resubmission goes ahead
        write_submission(layout, ours)
        with pytest.raises(Exception, match=f"live jobs \\({pid}\\)"):
            refuse_if_alive(layout)
    finally:
        other.kill()
        other.wait()
