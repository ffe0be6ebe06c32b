"""Every run of a study as its own job, through submitit: on SLURM, or as local subprocess jobs.

The study becomes three stages of jobs: ``prepare --until verify``, then the cache as a job array (``prepare
--shard k/n`` per task; the last shard to finish publishes the cache), then every pending run (train, predict,
evaluate) as one task of a run array, then the report as a final job. On SLURM the stages are chained with
``afterok`` dependencies and ``cxrgen study`` returns once all are queued; submitit's local executor has no
dependencies, so there the submitting process waits for each stage before sending the next.

A run job is submitit ``Checkpointable``: on preemption or timeout submitit calls :meth:`RunJob.checkpoint` and
requeues the same job, which resumes from ``last.ckpt`` (at most one epoch lost). Each run job writes
``<run>/job.json`` (state, job id, log path, the error's last line) for ``cxrgen status``, and the submission
writes ``<study>/jobs.json``, which a second submission reads to refuse while any of its jobs is still alive.

submitit's local executor runs each job as a controller process (its pid is the job id that ``jobs.json``,
``job.json`` and ``cxrgen status`` show) that starts the task, the process that trains, as its child. The task is
bound to the controller (:func:`end_with_local_job`): killing the job id, even with SIGKILL, ends the training.
``jobs.json`` records each local job's process start time, so a job id that a later, unrelated process has taken
does not count as a live job.
The scheduling itself is submitit's and SLURM's; this module only decides what to send and records it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import subprocess
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from cxrgen.errors import CxrgenError
from cxrgen.runner.study import complete_run, planned_seed_runs, run_finished, run_name
from cxrgen.study.config import Configuration, StudyConfig
from cxrgen.study.layout import RunDir, StudyDir
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import write_text
from cxrgen.utils.lock import study_lock
from cxrgen.utils.processes import die_with_parent, process_command, process_start, running

log = logging.getLogger(__name__)
Launcher = Literal["submitit-local", "slurm"]
LAUNCHERS: tuple[str, ...] = ("local", "submitit-local", "slurm")
Say = Callable[[str], None]


class LaunchError(CxrgenError):
    """A submission that cannot go ahead (jobs still alive, a stage that failed)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_run_job(run: RunDir, state: str, **fields: Any) -> None:
    """Record a run job's state in ``<run>/job.json`` (atomically: ``cxrgen status`` may read it any time)."""
    record = {"state": state, "host": socket.gethostname(), "pid": os.getpid(), "updated": _now(), **fields}
    write_text(run.job, json.dumps(record, indent=2) + "\n")


def read_run_job(run: RunDir) -> dict[str, Any]:
    """The run's ``job.json``; empty when no launcher job has run it."""
    return dict(json.loads(run.job.read_text())) if run.job.exists() else {}


def last_error_line(exc: BaseException) -> str:
    lines = [line for line in traceback.format_exception_only(exc) if line.strip()]
    return " ".join(lines[-1].split()) if lines else type(exc).__name__


def end_with_local_job() -> None:
    """In a submitit-local task: end this process when its job's controller process ends, however it ends.

    The controller's pid is the job id a user sees and kills; without this a SIGKILL to it leaves the task (the
    training) running as an orphan that finishes and writes ``done.json`` after the submission reported it failed.
    Nothing on SLURM, which ends a job's whole process tree itself.
    """
    if os.environ.get("SUBMITIT_EXECUTOR") != "local":
        return
    controller = os.environ.get("SUBMITIT_LOCAL_JOB_ID", "")
    # With a setup shell the job id is the shell's, not the parent's: then bind to whichever parent this is.
    direct = controller.isdigit() and not os.environ.get("SUBMITIT_LOCAL_WITH_SHELL")
    die_with_parent(int(controller) if direct else None)


class RunJob(Checkpointable):
    """One run (configuration, architecture, seed) as a job: train (resuming), predict every test set, evaluate."""

    def __init__(self, study: Study, configuration: str, arch: str, seed: int) -> None:
        self.study, self.configuration, self.arch, self.seed = study, configuration, arch, seed

    @property
    def run(self) -> RunDir:
        return self.study.run(self.configuration, self.arch, self.seed)

    def _job_fields(self) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        return {"job_id": env.job_id, "log": str(env.paths.stderr)}

    def __call__(self) -> str:
        end_with_local_job()
        run = self.run
        run.path.mkdir(parents=True, exist_ok=True)
        fields = self._job_fields()
        write_run_job(run, "running", started=_now(), **fields)
        try:
            configuration = self.study.config.configuration(self.configuration)
            complete_run(self.study, configuration, self.arch, self.seed)
        except Exception as exc:
            write_run_job(run, "failed", error=last_error_line(exc), **fields)
            raise
        write_run_job(run, "done", **fields)
        return str(run.path)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Preempted or timed out: requeue the same job; ``train_run`` resumes from ``last.ckpt``."""
        write_run_job(self.run, "requeued", **self._job_fields())
        return DelayedSubmission(self, *args, **kwargs)


def prepare_job(study: Study, until: str, shard: tuple[int, int] | None) -> str:
    """``cxrgen prepare`` inside a job: the verify stage, or one shard of the cache."""
    from cxrgen.runner.prepare import run_prepare

    end_with_local_job()
    workers = study.config.launcher.cpus_per_task
    run_prepare(study, until=until, shard=shard, workers=workers)  # type: ignore[arg-type]
    return until if shard is None else f"cache shard {shard[0]}/{shard[1]}"


def report_job(study: Study) -> str:
    """The final job: the study's report over every run's predictions."""
    from cxrgen.report import build_report

    end_with_local_job()
    return str(build_report(study.dir.path, review=study.config.launcher.review))


def sbatch_parameters(config: StudyConfig) -> dict[str, Any]:
    """submitit parameters of every job of the study, from the study file's ``launcher:`` block."""
    launcher = config.launcher
    parameters: dict[str, Any] = {
        "timeout_min": launcher.timeout_min,
        "cpus_per_task": launcher.cpus_per_task,
        "gpus_per_node": launcher.gpus_per_node,
        "mem_gb": launcher.mem_gb,
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_array_parallelism": launcher.array_parallelism,
    }
    for key in ("partition", "account", "qos"):
        value = getattr(launcher, key)
        if value is not None:
            parameters[f"slurm_{key}"] = value
    if launcher.extra:
        parameters["slurm_additional_parameters"] = dict(launcher.extra)
    return parameters


def make_executor(study: Study, launcher: Launcher) -> submitit.AutoExecutor:
    """An executor with the study's settings; the local one gets no GPUs it does not have."""
    config = study.config
    cluster = "slurm" if launcher == "slurm" else "local"
    logs = config.launcher.folder or study.dir.job_logs
    executor = submitit.AutoExecutor(
        folder=logs / "%j", cluster=cluster, slurm_max_num_timeout=config.launcher.max_requeues
    )
    parameters = sbatch_parameters(config)
    if cluster == "local":
        import torch

        parameters["gpus_per_node"] = min(parameters["gpus_per_node"], torch.cuda.device_count())
    executor.update_parameters(name=f"cxrgen-{config.name}", **parameters)
    return executor


class _SbatchText(submitit.SlurmExecutor):
    """SLURM's own executor, used only to render its sbatch text: rendering is text, so it asks for no cluster.

    submitit's executor refuses to exist where ``srun`` is not on the PATH; a laptop that writes or reviews a
    study's job script has no SLURM, and needs none to see what would be submitted.
    """

    @classmethod
    def affinity(cls) -> int:
        return 1


def sbatch_script(study: Study) -> str:
    """The sbatch script ``--launcher slurm`` submits for a run job of this study.

    submitit has no public call for it; its SLURM executor's own text builder is used, so this is the very script,
    with the same generic-to-SLURM parameter translation the ``AutoExecutor`` of :func:`make_executor` applies.
    """
    config = study.config
    executor = _SbatchText(folder=(config.launcher.folder or study.dir.job_logs) / "%j",
                           max_num_timeout=config.launcher.max_requeues)  # fmt: skip
    parameters = {"name": f"cxrgen-{config.name}-run", **sbatch_parameters(config)}
    native = {key.removeprefix("slurm_"): value for key, value in parameters.items() if key.startswith("slurm_")}
    generic = {key: value for key, value in parameters.items() if not key.startswith("slurm_")}
    executor.update_parameters(**executor._convert_parameters(generic), **native)
    return str(executor._make_submission_file_text(executor._submitit_command_str, "%j"))


# ------------------------------------------------------------------------------------------------ records


@dataclass
class Submission:
    """What one ``cxrgen study --launcher ...`` sent: job ids per stage and per run, with their logs."""

    launcher: str
    host: str = field(default_factory=socket.gethostname)
    submitted: str = field(default_factory=_now)
    stages: dict[str, list[str]] = field(default_factory=dict)
    runs: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Local jobs only: each job id's process start time (:func:`cxrgen.utils.processes.process_start`).
    started: dict[str, str] = field(default_factory=dict)

    def job_ids(self) -> list[str]:
        ids = [job for jobs in self.stages.values() for job in jobs] + [run["job_id"] for run in self.runs.values()]
        return list(dict.fromkeys(ids))


def read_submission(layout: StudyDir) -> Submission | None:
    path = layout.jobs
    if not path.exists():
        return None
    try:
        return Submission(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise LaunchError(f"{path}: not a cxrgen job record ({exc})") from exc


def write_submission(layout: StudyDir, submission: Submission) -> None:
    write_text(layout.jobs, json.dumps(submission.__dict__, indent=2) + "\n")


def alive_jobs(submission: Submission) -> list[str]:
    """Job ids of a recorded submission that are still queued or running.

    SLURM ids are asked of ``squeue``; local job ids are process ids, alive only on the host that submitted.
    """
    ids = submission.job_ids()
    if not ids:
        return []
    if submission.launcher == "slurm":
        if shutil.which("squeue") is None:
            raise LaunchError("jobs.json records SLURM jobs but squeue is not on PATH: cannot tell if they still run")
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", ",".join(sorted({i.split("_")[0] for i in ids}))],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        queued = set(out.split())
        return [i for i in ids if i in queued or i.split("_")[0] in queued]
    if submission.host != socket.gethostname():
        return ids  # cannot see another host's processes: assume they live (the lock's rule)
    return [job for job in ids if _local_job_alive(job, submission.started.get(job))]


def _local_job_alive(job: str, started: str | None) -> bool:
    """A local job id (a process id) is alive while its process runs and is still the job's process.

    The id may since have gone to another process: with the start time recorded, a different start time says so;
    without (a ``jobs.json`` written before it was recorded), a command line that is not submitit's does.
    """
    if not job.isdigit() or not running(int(job)):
        return False
    if started is not None:
        now = process_start(int(job))
        return now == started if now is not None else running(int(job))  # None: gone since, or no ``ps``
    command = process_command(int(job))
    return command is None or "submitit" in command


def refuse_if_alive(layout: StudyDir) -> None:
    """Raise when the study's last submission still has queued or running jobs, naming them."""
    previous = read_submission(layout)
    alive = alive_jobs(previous) if previous is not None else []
    if previous is not None and alive:
        raise LaunchError(
            f"{layout.path}: the {previous.launcher} submission of {previous.submitted} still has live jobs "
            f"({', '.join(alive)}); wait for them, or cancel them first (scancel for SLURM)"
        )


# ------------------------------------------------------------------------------------------------ launch


def _wait(jobs: Sequence[submitit.Job[Any]], stage: str, runs: Sequence[RunDir] = ()) -> None:
    """Local executor only: block until every job of a stage ended; a failed one stops the study.

    A run job killed outright could not record its end: its ``job.json`` (``runs``, one per job) is marked failed
    here.
    """
    failed = []
    for i, job in enumerate(jobs):
        try:
            job.result()
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as exc:
            lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
            # A job that died outright (UncompletedJobError) is summed up in the first line, with its state; the
            # rest is its stderr's tail. A failed one ends with the exception's last line.
            uncompleted = isinstance(exc, submitit.core.utils.UncompletedJobError)
            error = (lines[0] if uncompleted else lines[-1]) if lines else "failed"
            failed.append(f"job {job.job_id} ({job.paths.stderr}): {error}")
            if runs and read_run_job(runs[i]).get("state") != "failed":
                write_run_job(runs[i], "failed", error=error, job_id=job.job_id, log=str(job.paths.stderr))
    if failed:
        raise LaunchError(f"{stage} failed: " + "; ".join(failed))


def _after(executor: submitit.AutoExecutor, config: StudyConfig, jobs: Sequence[submitit.Job[Any]]) -> None:
    """SLURM: the next stage starts only after every job of ``jobs`` succeeded."""
    extra: dict[str, Any] = dict(config.launcher.extra)
    if jobs:
        extra["dependency"] = "afterok:" + ":".join(sorted({job.job_id.split("_")[0] for job in jobs}))
    executor.update_parameters(slurm_additional_parameters=extra)


def submit_runs(
    executor: submitit.AutoExecutor,
    study: Study,
    runs: Sequence[tuple[Configuration, str, int]],
    submission: Submission,
    record: Callable[[str, Sequence[submitit.Job[Any]]], None],
    local: bool,
) -> None:
    """Verify, the cache array, then the run array, each stage after the one before."""
    config = study.config
    executor.update_parameters(name=f"cxrgen-{config.name}-verify")
    verify = [executor.submit(prepare_job, study, "verify", None)]
    record("verify", verify)
    if local:
        _wait(verify, "prepare --until verify")
    _after(executor, config, verify)
    n = config.launcher.cache_shards
    executor.update_parameters(name=f"cxrgen-{config.name}-cache")
    cache = executor.map_array(prepare_job, [study] * n, ["cache"] * n, [(k, n) for k in range(1, n + 1)])
    record("cache", cache)
    if local:
        _wait(cache, "cache")
    _after(executor, config, cache)
    executor.update_parameters(name=f"cxrgen-{config.name}-run")
    with executor.batch():
        run_jobs = [executor.submit(RunJob(study, c.name, a, seed)) for c, a, seed in runs]
    for (configuration, arch, seed), job in zip(runs, run_jobs, strict=True):
        name = run_name(config, configuration.name, arch, seed)
        submission.runs[name] = {"job_id": job.job_id, "log": str(job.paths.stderr)}
    record("runs", run_jobs)
    if local:
        _wait(run_jobs, "runs", [study.run(c.name, a, seed) for c, a, seed in runs])
    _after(executor, config, run_jobs)


def pending_runs(study: Study, only: str | None = None) -> list[tuple[Configuration, str, int]]:
    """The planned runs a submission sends: those not finished (see ``cxrgen.runner.study.run_finished``)."""
    planned = planned_seed_runs(study.config, only)
    return [(c, a, seed) for c, a, seed in planned if not run_finished(study, c, a, seed)]


def launch_study(
    study: Study,
    launcher: Launcher,
    *,
    only: str | None = None,
    say: Say | None = None,
) -> Submission:
    """Send the study's pending work as jobs; refused while a previous submission still has live jobs.

    Runs already finished (``done.json``, every predictions file, ``auc.csv``) are not sent again.

    Returns:
        The submission, also written to ``<study>/jobs.json``.

    Raises:
        LaunchError: a previous submission's jobs are alive (their ids in the message), or, with the local
            executor, a stage failed (its job id, log and last error line in the message).
    """
    say = say or (lambda message: log.info("%s", message))
    config, layout = study.config, study.dir
    local = launcher == "submitit-local"
    # Checked before the lock too: a local submission holds the lock while its jobs run, and the refusal should
    # name the jobs, not only the submitting process.
    refuse_if_alive(layout)
    with study_lock(layout.path):
        refuse_if_alive(layout)
        runs = pending_runs(study, only)
        submission = Submission(launcher=launcher)
        executor = make_executor(study, launcher)
        say("submitit parameters: " + json.dumps(sbatch_parameters(config), default=str))
        if launcher == "slurm":
            say("sbatch script of a run job:\n" + sbatch_script(study))

        def record(stage: str, jobs: Sequence[submitit.Job[Any]]) -> None:
            submission.stages[stage] = [job.job_id for job in jobs]
            if local:
                stamps = {job.job_id: process_start(int(job.job_id)) for job in jobs}
                submission.started.update({job: stamp for job, stamp in stamps.items() if stamp is not None})
            write_submission(layout, submission)
            say(f"{stage}: job(s) {', '.join(job.job_id for job in jobs)}")

        if runs:  # nothing left to train needs no cache: a finished study gets only its report job
            submit_runs(executor, study, runs, submission, record, local)
        executor.update_parameters(name=f"cxrgen-{config.name}-report")
        final = [executor.submit(report_job, study)]
        record("report", final)
        if local:
            _wait(final, "report")
    return submission
