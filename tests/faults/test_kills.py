"""Issue 8, kills and concurrency: SIGKILL every stage of the real ``cxrgen`` command at a meaningful moment, check
that no file is visible half-written, rerun the same command and compare with an uninterrupted run.

The reference is one uninterrupted ``cxrgen study`` + ``cxrgen report`` in its own folder (a second ``cxrgen study``
started meanwhile must be refused by the lock). The killed chain runs the stages one command at a time in another
folder; each test makes sure the stages before it are done, so any of them can also run alone.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxrgen.synthetic import write_synthetic
from cxrgen.utils.lock import LOCK_NAME
from helpers.faults import (
    ARCH,
    ENV,
    changed,
    check_complete,
    cxrgen,
    error_lines,
    kill_when,
    leftovers,
    start,
    study_yaml,
    wait_for,
)

pytestmark = pytest.mark.slow  # real processes and whole studies: minutes; `make test-fast` leaves them out

SYNTH = ("--seed", "0", "--scale", "0.05", "--image-size", "64", "--workers", "1")
OUT = Path("runs") / "tiny"
RUN = OUT / "runs" / "c1" / ARCH
TRAIN = ("train", "tiny.yaml", "--configuration", "c1", "--arch", ARCH)
PREDICT = ("predict", "tiny.yaml", "--configuration", "c1", "--arch", ARCH)
REPORT_TABLES = ("auc.csv", "calibration.csv", "comparisons.csv", "cohort.csv", "table1.csv", "review.csv")
AFTER_ENTER = """
import sys
import cxrgen.cli, cxrgen.study.config, cxrgen.runner.study, cxrgen.learn.train, cxrgen.learn.predict
print("imported", flush=True)
sys.stdin.readline()
sys.argv[0] = "cxrgen"
cxrgen.cli.main()
"""
rng = random.Random(8)  # the delays of kills that cannot wait for an artifact: random, but the same every run


def ok(result: object) -> None:
    assert result.returncode == 0, result.stderr[-3000:]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Start the uninterrupted study in the background; a second ``cxrgen study`` tries the same folder meanwhile.

    The reference runs beside the killed chain (its children use one thread each, the machine has two cores).
    """
    data = tmp_path_factory.mktemp("reference") / "data"
    write_synthetic(data, seed=0, scale=0.05, image_size=64)
    (data / "tiny.yaml").write_text(study_yaml())
    # The second command is started first with its imports done, and let go the moment the first holds the lock.
    second = subprocess.Popen(
        [sys.executable, "-c", AFTER_ENTER, "study", "tiny.yaml", "--workers", "1"], cwd=data, env=ENV, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert second.stdout is not None and second.stdout.readline().strip() == "imported"
    first = start("study", "tiny.yaml", "--workers", "1", cwd=data)
    assert wait_for(first, (data / OUT / LOCK_NAME).exists)
    out, err = second.communicate("go\n", timeout=60)
    first_was_running = first.poll() is None
    refused = subprocess.CompletedProcess(second.args, second.returncode, out, err)
    return {"data": data, "first": first, "second": refused, "first_was_running": first_was_running}


def reference(request: pytest.FixtureRequest, report: bool = False) -> Path:
    """The reference study folder once its study (and, with ``report``, its report) has finished."""
    started = request.getfixturevalue("started")
    data, first = started["data"], started["first"]
    if "report" not in started:
        _, stderr = first.communicate(timeout=400)
        assert first.returncode == 0, stderr[-3000:]
        started["report"] = start("report", OUT, cwd=data)
    if report:
        proc = started["report"]
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    return Path(data)


def _exists(path: Path) -> Callable[[], Callable[[], bool]]:
    return lambda: path.exists


def _changed(path: Path) -> Callable[[], Callable[[], bool]]:
    return lambda: changed(path)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where every stage is killed once and rerun."""
    return tmp_path_factory.mktemp("killed") / "data"


def _kill_and_rerun(
    args: tuple[str, ...], cwd: Path, arm: Callable[[], Callable[[], bool]], delay: float, attempts: int = 4
) -> None:
    """SIGKILL ``args`` ``delay`` seconds after the moment ``arm()`` waits for, then rerun it to completion.

    A kill that lands after the process finished proves nothing, so it is retried with a quarter of the delay
    (``arm`` resets whatever the moment depends on); the test fails unless one attempt really was killed
    (exit status -9) and left only complete files.
    """
    ready = arm()
    proc = start(*args, cwd=cwd)
    tries = 1
    while not kill_when(proc, ready, delay):
        proc.communicate(timeout=60)
        print(f"{args[0]}: finished ({proc.returncode}) before the kill after {delay:.3f} s; retrying sooner")
        assert tries < attempts, f"{args}: finished before the kill in all {attempts} attempts"
        delay, tries = delay / 4, tries + 1
        ready = arm()
        proc = start(*args, cwd=cwd)
    assert proc.returncode == -signal.SIGKILL
    print(f"{args[0]} {' '.join(args[1:4])}: killed after {delay:.3f} s (attempt {tries})")
    assert _orphans(cwd) == [], f"{args[0]}: its worker processes outlived it"
    assert check_complete(cwd) > 0
    ok(cxrgen(*args, cwd=cwd))
    assert check_complete(cwd) > 0


def _orphans(cwd: Path, wait: float = 5.0) -> list[str]:
    """Processes still working in ``cwd`` (a killed command's workers) after ``wait`` seconds: none may outlive it."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if Path(os.readlink(proc / "cwd")).is_relative_to(cwd):
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{proc.name}: {command}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _ensure_synthesized(chain: Path) -> None:
    if not (chain / "tiny.yaml").exists():
        ok(cxrgen("synthesize", chain, *SYNTH, cwd=chain.parent))
        (chain / "tiny.yaml").write_text(study_yaml())


def _ensure(chain: Path, until: str) -> None:
    """Run (unkilled) the stages up to ``until`` whose artifacts are missing: lets any test here run alone."""
    _ensure_synthesized(chain)
    if until == "cache" and not (chain / OUT / "cache" / "mimic-32-opencv" / "meta.json").exists():
        ok(cxrgen("prepare", "tiny.yaml", "--workers", "1", cwd=chain))
    if until in ("train", "predict") and not (chain / RUN / "done.json").exists():
        _ensure(chain, "cache")
        ok(cxrgen(*TRAIN, cwd=chain))
    if until == "predict" and not (chain / RUN / "predictions" / "mimic.parquet").exists():
        _ensure(chain, "train")
        ok(cxrgen(*PREDICT, cwd=chain))


def _same_frames(reference: Path, resumed: Path, names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        read = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        pd.testing.assert_frame_equal(read(resumed / name), read(reference / name), obj=name)


def test_second_study_in_a_running_directory_is_refused(started: dict[str, object]) -> None:
    second = started["second"]
    lines = error_lines(second)  # type: ignore[arg-type]
    assert started["first_was_running"], "the first study ended before the second one tried: no contention"
    assert second.returncode == 1 and len(lines) == 1, second.stderr  # type: ignore[attr-defined]
    assert "another cxrgen process (pid" in lines[0] and LOCK_NAME in lines[0]


def test_kill_synthesize(started: dict[str, object], chain: Path, request: pytest.FixtureRequest) -> None:
    chain.parent.mkdir(exist_ok=True)

    def arm() -> Callable[[], bool]:
        shutil.rmtree(chain, ignore_errors=True)  # a finished attempt would let the next one skip its work
        return (chain / "chexpert").exists

    _kill_and_rerun(("synthesize", str(chain), *SYNTH), chain.parent, arm, rng.uniform(0, 0.3))
    ref = Path(started["data"])  # type: ignore[arg-type]  # written before the reference study started

    def files(root: Path) -> set[Path]:
        found = (p.relative_to(root) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
        return {p for p in found if p.parts[0] != "runs"}

    theirs, mine = files(ref), files(chain)
    assert mine == theirs - {Path("tiny.yaml")}
    for relative in sorted(mine):
        assert (chain / relative).read_bytes() == (ref / relative).read_bytes(), relative
    (chain / "tiny.yaml").write_text(study_yaml())


ARTIFACTS = {
    "manifest": ["manifest.parquet"],
    "splits": ["manifest.parquet", "splits.parquet"],
    "verify": ["manifest.parquet", "splits.parquet", "excluded.csv"],
}


@pytest.mark.parametrize("stage", ["manifest", "splits", "verify", "cache"])
def test_kill_prepare(started: dict[str, object], chain: Path, request: pytest.FixtureRequest, stage: str) -> None:
    _ensure_synthesized(chain)
    out = chain / OUT
    if stage == "cache":  # the moment a cache build has laid out its partial folder
        arm: Callable[[], Callable[[], bool]] = lambda: lambda: any((out / "cache").glob("*.partial"))  # noqa: E731
        delay = rng.uniform(0, 0.05)
    else:  # too fast to catch by an artifact: some time after the run started (config.yaml rewritten)
        arm, delay = _changed(out / "config.yaml"), rng.uniform(0, 0.6)
    _kill_and_rerun(("prepare", "tiny.yaml", "--until", stage, "--workers", "1"), chain, arm, delay)
    ref = reference(request) / OUT
    if stage != "cache":
        _same_frames(ref, out, ARTIFACTS[stage])
        return
    for key in ("chexpert-32-opencv", "mimic-32-opencv"):
        mine, theirs = out / "cache" / key, ref / "cache" / key
        np.testing.assert_array_equal(np.load(mine / "images.npy"), np.load(theirs / "images.npy"))
        _same_frames(theirs, mine, ["index.parquet"])
    assert not list((out / "cache").glob("*.partial"))


def _weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    return dict(torch.load(run / "checkpoints" / name, weights_only=True)["state_dict"])


def test_kill_train(started: dict[str, object], chain: Path, request: pytest.FixtureRequest) -> None:
    _ensure(chain, "cache")
    run = chain / RUN
    last = run / "checkpoints" / "last.ckpt"
    proc = start(*TRAIN, cwd=chain)
    assert kill_when(proc, last.exists)  # killed in epoch 2, after epoch 1's checkpoints
    check_complete(chain)
    assert torch.load(last, weights_only=True)["epoch"] == 0 and not (run / "done.json").exists()
    ok(cxrgen(*TRAIN, cwd=chain))
    ref = reference(request) / RUN
    for name in ("last.ckpt", "best.ckpt"):
        theirs, mine = _weights(ref, name), _weights(run, name)
        assert theirs.keys() == mine.keys()
        assert all(torch.equal(theirs[k], mine[k]) for k in theirs), name
    columns = ["epoch", "step", "train_loss", "val_loss", "val_auc_mean"]
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv")[columns], pd.read_csv(ref / "metrics.csv")[columns])


def test_kill_predict(started: dict[str, object], chain: Path, request: pytest.FixtureRequest) -> None:
    _ensure(chain, "train")
    first = chain / RUN / "predictions" / "internal.parquet"

    def arm() -> Callable[[], bool]:
        shutil.rmtree(first.parent, ignore_errors=True)  # killed between the first and the last test set
        return first.exists

    _kill_and_rerun(PREDICT, chain, arm, 0.0)
    _same_frames(reference(request) / RUN / "predictions", first.parent, ["internal.parquet", "mimic.parquet"])


def test_kill_report(started: dict[str, object], chain: Path, request: pytest.FixtureRequest) -> None:
    _ensure(chain, "predict")
    results = chain / OUT / "results"
    _kill_and_rerun(("report", str(OUT)), chain, _changed(results / "config.yaml"), rng.uniform(0, 3.0))
    _same_frames(reference(request, report=True) / OUT / "results", results, REPORT_TABLES)
    assert (results / "report.html").is_file() and (results / "figures" / "review.png").is_file()


def test_killed_study_leaves_a_stale_lock_that_is_taken_over(
    started: dict[str, object], chain: Path, request: pytest.FixtureRequest
) -> None:
    _ensure(chain, "predict")
    lock = chain / OUT / LOCK_NAME
    (chain / RUN / "auc.csv").unlink(missing_ok=True)
    proc = start("study", "tiny.yaml", "--workers", "1", cwd=chain)
    assert kill_when(proc, lock.exists)  # at once: the rest of this study's work takes about a second
    assert lock.exists()  # SIGKILL left it behind
    ok(cxrgen("study", "tiny.yaml", "--workers", "1", cwd=chain))
    assert not lock.exists()
    _same_frames(reference(request) / RUN, chain / RUN, ["auc.csv"])
    check_complete(chain)
    print("temporary files left by the kills:", leftovers(chain))
