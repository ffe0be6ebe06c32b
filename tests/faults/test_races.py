"""Issue 14, races: two real ``cxrgen`` processes at once on one study directory or one cache.

A ``cxrgen study`` training a run holds the study lock and the run's lock: a ``cxrgen prepare`` of the study and
a ``cxrgen train`` of that run are refused, naming the holder. Shards finishing together assemble one cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxrgen.data.cache import read_meta
from cxrgen.synthetic import write_synthetic
from helpers.faults import ARCH, ENV, changed, check_complete, cxrgen, error_lines, start, study_yaml, wait_for

LONG_TRAIN = {"pretrained": False, "max_epochs": 200, "patience": 1000, "batch_size": 16, "num_workers": 0,
              "accelerator": "cpu", "devices": 1}  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("races") / "data"
    write_synthetic(folder, seed=0, scale=0.05, image_size=64)
    return folder


@pytest.mark.slow
def test_prepare_and_train_are_refused_while_study_trains_the_run(data: Path) -> None:
    (data / "long.yaml").write_text(study_yaml(out="runs/long", train=LONG_TRAIN))
    run = data / "runs" / "long" / "runs" / "c1" / ARCH
    study = start("study", "long.yaml", "--workers", "1", cwd=data)
    try:
        assert wait_for(study, changed(run / "checkpoints" / "last.ckpt"), timeout=300)
        prepare = cxrgen("prepare", "long.yaml", "--workers", "1", cwd=data)
        train = cxrgen("train", "long.yaml", "--configuration", "c1", "--arch", ARCH, cwd=data)
        assert study.poll() is None, "the study ended before both commands had run beside it"
    finally:
        if study.poll() is None:
            os.kill(study.pid, signal.SIGTERM)
        study.communicate(timeout=120)
    assert study.returncode == 128 + signal.SIGTERM  # it really was still training, and was stopped

    assert prepare.returncode == 1, prepare.stderr[-3000:]  # before the fix: 0, writing beside the study
    holder = f"another cxrgen process (pid {study.pid} on "
    assert [line for line in error_lines(prepare) if holder in line and str(data / "runs" / "long") in line]
    assert train.returncode == 1, train.stderr[-3000:]  # before the fix: trained the same run at once
    assert [line for line in error_lines(train) if holder in line and str(run) in line], train.stderr[-3000:]


# Builds one shard of the chexpert cache in small chunks once a go-file appears (so two processes start together).
SHARD = """
import sys, time
from pathlib import Path
import pandas as pd
from cxrgen.data.cache import build_cache
out, root, k, go = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
rows = pd.read_parquet(out / "manifest.parquet")
rows = rows[rows["dataset"] == "chexpert"]
while not go.exists():
    time.sleep(0.0005)
print(build_cache(rows, root, out, "chexpert", 32, "opencv", True, workers=1, shard=(k, 2), chunk_size=8))
"""


@pytest.mark.slow
def test_two_shards_finishing_together_publish_one_cache(data: Path) -> None:
    (data / "shards.yaml").write_text(study_yaml(out="runs/shards"))
    assert cxrgen("prepare", "shards.yaml", "--until", "verify", "--workers", "1", cwd=data).returncode == 0
    out = data / "runs" / "shards"
    final = out / "cache" / "chexpert-32-opencv"
    for attempt in range(3):
        go = out / f"go-{attempt}"
        args = [str(out), str(data / "chexpert")]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SHARD, *args, str(k), str(go)],
                cwd=data, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            for k in (1, 2)
        ]
        time.sleep(3)  # both imported and waiting
        go.touch()
        results = [(p.wait(300), *p.communicate()) for p in procs]
        for code, _, err in results:
            assert code == 0, err[-3000:]  # before the fix: No such file or directory: .../<key>.partial/...
        printed = {Path(stdout.strip()) for _, stdout, _ in results}
        assert final in printed, printed  # the last to finish returned the published cache
        meta = read_meta(final)
        assert meta is not None and meta["complete"] and meta["failed"] == 0
        assert sorted(p.name for p in final.parent.iterdir() if not p.name.startswith(".cxrgen")) == [final.name]
        check_complete(out)
        # Unpublish it again, so the next attempt races the assembly afresh from a partial folder.
        os.rename(final, final.with_name(final.name + ".partial"))
        partial = final.with_name(final.name + ".partial")
        (partial / "meta.json").write_text(json.dumps({**meta, "complete": False}))
