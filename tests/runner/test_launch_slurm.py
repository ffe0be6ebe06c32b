"""Issue 12 on a real SLURM: a single-node cluster on this machine (``scripts/slurm-local.sh``, Debian's slurm-wlm
and munge) runs a tiny synthetic study through ``cxrgen study --launcher slurm`` end to end: verify, the cache job
array, the run job and the report job, chained by ``afterok`` dependencies. Skips, printing why, when the cluster
cannot start here (no packages, not root); an ``SLURM_CONF`` already in the environment is used as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from components import SKIP_PREFIX, absent_because
from cxrgen.study.layout import StudyDir
from cxrgen.synthetic import write_synthetic
from helpers.faults import ARCH, ENV, study_yaml

pytestmark = pytest.mark.requires("sbatch")  # a cluster's client; a local cluster also needs the daemons below

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm-local.sh"
LAUNCHER = {"cache_shards": 2, "review": False, "cpus_per_task": 1, "gpus_per_node": 0, "mem_gb": 2,
            "timeout_min": 15, "partition": "debug"}  # fmt: skip


def _skip(reason: str) -> None:
    print(f"SKIP real SLURM test: {reason}")
    pytest.skip(reason)


def _sinfo_ok(env: dict[str, str]) -> bool:
    try:
        result = subprocess.run(["sinfo", "-h"], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment (``SLURM_CONF``) of a running single-node cluster: started here and stopped after."""
    if os.environ.get("SLURM_CONF") and _sinfo_ok(dict(ENV)):
        yield dict(ENV)
        return
    for part in ("slurmctld", "munged", "root"):  # to start a single-node cluster here
        why = absent_because(part)
        if why is not None:
            _skip(f"{SKIP_PREFIX}{part}: {why}")
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=60)
        _skip(started.stderr.strip().splitlines()[-1] if started.stderr.strip() else "slurm-local.sh start failed")
    env = {**ENV, "SLURM_CONF": str(state / "slurm.conf")}
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=60)


def _queue(env: dict[str, str]) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.mark.slow
def test_tiny_study_end_to_end_on_a_real_single_node_slurm(
    slurm: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    write_synthetic(data, seed=0, scale=0.05, image_size=64)
    (data / "tiny.yaml").write_text(study_yaml(launcher=LAUNCHER))
    began = time.monotonic()
    submit = subprocess.run(
        [sys.executable, "-m", "cxrgen", "study", "tiny.yaml", "--launcher", "slurm"],
        cwd=data, env=slurm, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr[-3000:]
    assert "#SBATCH --partition=debug" in submit.stdout and "#SBATCH --signal=USR2@90" in submit.stdout
    out = data / "runs" / "tiny"
    record = json.loads(StudyDir(out).jobs.read_text())
    assert record["launcher"] == "slurm" and list(record["stages"]) == ["verify", "cache", "runs", "report"]
    auc = out / "results" / "auc.csv"
    deadline = time.monotonic() + 900
    while not auc.exists():
        queue = _queue(slurm)
        assert queue or auc.exists(), f"the queue emptied without a report; logs in {out / 'jobs'}"
        assert time.monotonic() < deadline, f"no report after 900 s; queue: {queue}"
        time.sleep(2)
    wall = time.monotonic() - began
    table = pd.read_csv(auc)
    assert len(table) == 2 * 5  # internal and mimic x five labels
    job = json.loads(StudyDir(out).run("c1", ARCH).job.read_text())
    assert job["state"] == "done" and job["job_id"] == record["runs"][f"c1/{ARCH}"]["job_id"]
    assert Path(job["log"]).is_file()
    with capsys.disabled():
        print(f"\nreal SLURM study: submitted to report in {wall:.1f} s (jobs {', '.join(record['stages'])})")
