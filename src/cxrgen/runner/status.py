"""Where every planned run of a study stands, read from the study folder alone.

``cxrgen status`` reads files only (``config.yaml``, ``jobs.json``, each run's ``job.json``, ``metrics.csv``,
``done.json``, ``auc.csv``), so it works while jobs run and from any machine that sees the folder; it never asks
the scheduler. A job killed without warning (SIGKILL, node failure) therefore still shows ``running`` until it is
resubmitted; ``updated`` (the age of its last epoch row or state change) tells how fresh that is.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from cxrgen.runner.launch import read_submission
from cxrgen.runner.study import planned_seed_runs, run_finished, run_name
from cxrgen.study.layout import RunDir
from cxrgen.study.workspace import Study

STATES = ("done", "running", "queued", "failed", "not started", "unreadable")
COLUMNS = ["run", "state", "job_id", "epoch", "best_val_auc", "sec_per_epoch", "eta_s", "updated_s", "log", "error"]


EPOCH_COLUMNS = ("epoch", "val_auc_mean", "seconds")


class Unreadable(ValueError):
    """A run file that cannot be read as written: ``str()`` is ``<file name>, <reason>``."""


def _epochs(run: RunDir) -> pd.DataFrame:
    path = run.metrics
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(EPOCH_COLUMNS))
    try:
        frame = pd.read_csv(path)
        missing = [c for c in EPOCH_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"no column(s) {', '.join(missing)}")
        for column in EPOCH_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="raise")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise Unreadable(f"{path.name}, {_reason(exc)}") from exc
    return frame


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON object file; anything else (empty, cut short, a list, not UTF-8) is :class:`Unreadable`."""
    try:
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise ValueError("empty file")
        value = json.loads(text)
    except (OSError, ValueError) as exc:
        raise Unreadable(f"{path.name}, {_reason(exc)}") from exc
    if not isinstance(value, dict):
        raise Unreadable(f"{path.name}, a JSON {type(value).__name__}, expected an object")
    return value


def _job(run: RunDir) -> dict[str, Any]:
    """``job.json`` checked for the fields status uses (``state`` a string), or {} when there is none."""
    if not run.job.exists():
        return {}
    job = _json_object(run.job)
    if not isinstance(job.get("state"), str):
        raise Unreadable(f"{run.job.name}, no 'state' string (found {job.get('state')!r})")
    return job


def study_status(study_dir: Path, now: float | None = None) -> pd.DataFrame:
    """One row per planned run: state, job id, progress, speed, ETA and log, in the study's run order.

    ``eta_s`` assumes the run goes to ``max_epochs`` (early stopping may end it sooner); ``updated_s`` is the age
    in seconds of the run's newest file among ``metrics.csv`` and ``job.json``.
    """
    study = Study.open(study_dir)
    config = study.config
    submission = read_submission(study.dir)
    submitted = submission.runs if submission is not None else {}
    now = time.time() if now is None else now
    rows = []
    for configuration, arch, seed in planned_seed_runs(config):
        name = run_name(config, configuration.name, arch, seed)
        run = study.run(configuration.name, arch, seed)
        sent = submitted.get(name, {})
        try:
            job, epochs = _job(run), _epochs(run)
            if run.done.exists():
                _json_object(run.done)
        except Unreadable as exc:
            # One damaged run file never hides the other runs: this run says what is wrong and where.
            rows.append({**_blank_row(name, sent), "state": "unreadable", "error": f"unreadable ({exc})"})
            continue
        # job.json belongs to the current submission only when it names the job that submission sent.
        current = bool(job) and (not sent or job.get("job_id") == sent.get("job_id"))
        if run_finished(study, configuration, arch, seed):
            state = "done"
        elif current and job["state"] == "failed":
            state = "failed"
        elif current and job["state"] == "running":
            state = "running"
        elif sent:
            state = "queued"  # sent and not started, or requeued after preemption
        else:
            state = "not started"
        n_epochs = int(epochs["epoch"].max()) if len(epochs) else 0
        seconds = float(epochs["seconds"].mean()) if len(epochs) else math.nan
        best = float(epochs["val_auc_mean"].max()) if len(epochs) else math.nan
        eta = (config.train.max_epochs - n_epochs) * seconds if state in ("running", "queued") else math.nan
        stamps = [p.stat().st_mtime for p in (run.metrics, run.job) if p.exists()]
        rows.append({
            "run": name,
            "state": state,
            "job_id": (job.get("job_id") if current else None) or sent.get("job_id", ""),
            "epoch": n_epochs,
            "best_val_auc": best,
            "sec_per_epoch": seconds,
            "eta_s": eta,
            "updated_s": now - max(stamps) if stamps else math.nan,
            "log": (job.get("log") if current else None) or sent.get("log", ""),
            "error": job.get("error", "") if state == "failed" else "",
        })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _blank_row(name: str, sent: dict[str, Any]) -> dict[str, Any]:
    return {"run": name, "state": "", "job_id": sent.get("job_id", ""), "epoch": 0, "best_val_auc": math.nan,
            "sec_per_epoch": math.nan, "eta_s": math.nan, "updated_s": math.nan, "log": sent.get("log", ""),
            "error": ""}  # fmt: skip


def counts(status: pd.DataFrame) -> dict[str, int]:
    """How many runs are in each state, every state listed."""
    return {state: int((status["state"] == state).sum()) for state in STATES}
