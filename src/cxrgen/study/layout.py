"""Where a study's artifacts live (DESIGN.md section 4), named once.

A study folder holds the resolved config, the manifest, splits and exclusions, the caches, one folder per run
and the report's ``results/``; a run folder holds its checkpoints, metrics, predictions and the markers that say
how far it got. Modules ask :class:`StudyDir` and :class:`RunDir` for a path instead of spelling file names, so a
layout change is one edit here and the contract tests of section 8 cover it.

Deliberately free of torch and Lightning: the CLI answers "is this run finished?" before importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxrgen.errors import CxrgenError

RESOLVED_CONFIG = "config.yaml"
EXCLUDED_FILE = "excluded.csv"
READING_NOTES_FILE = "reading_notes.csv"
SEED_PREFIX = "seed-"
TRUTH_FILE = "truth.parquet"


@dataclass(frozen=True)
class RunDir:
    """``<study>/runs/<configuration>/<arch>[/seed-<N>]``: one trained model and everything made from it."""

    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        """The weights with the best validation loss: what ``predict`` uses."""
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        """Weights and optimizer state after the last finished epoch: what a resumed run starts from."""
        return self.checkpoints / "last.ckpt"

    @property
    def done(self) -> Path:
        """Written when training finished (early stop or the last epoch); absent for an unfinished run."""
        return self.path / "done.json"

    @property
    def fingerprint(self) -> Path:
        """``run.json``: the recipe the run was started with; a changed recipe is refused, not resumed."""
        return self.path / "run.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def config(self) -> Path:
        return self.path / RESOLVED_CONFIG

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files (rank 0; ``tensorboard --logdir runs``); ``metrics.csv`` stays the record."""
        return self.path / "tensorboard"

    @property
    def auc(self) -> Path:
        return self.path / "auc.csv"

    @property
    def validation(self) -> Path:
        """Validation-split predictions, where thresholds and temperatures are fitted (issue 11)."""
        return self.path / "validation.parquet"

    @property
    def job(self) -> Path:
        """``job.json``: the state of the launcher job that runs this run (written by the launcher, read by status)."""
        return self.path / "job.json"

    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

    def predictions(self, test_set: str) -> Path:
        return self.predictions_dir / f"{test_set}.parquet"

    @property
    def finished(self) -> bool:
        return self.done.is_file()

    def require_finished(self, name: str) -> None:
        """Refuse to treat a half-trained run's ``best.ckpt`` as a result."""
        if not self.finished:
            raise CxrgenError(
                f"run {name} is unfinished (no done.json in {self.path}): its best.ckpt comes from a half-trained "
                "run; finish it with `cxrgen train`, or pass --allow-unfinished to predict anyway (the "
                "predictions are then marked unfinished)"
            )


@dataclass(frozen=True)
class DatasetDir:
    """A dataset's ``root`` as the study file names it: its native files, and what only a synthetic one holds."""

    path: Path

    @property
    def truth(self) -> Path:
        """``truth.parquet`` of a synthetic hospital (true cardiothoracic ratio and device per image, written by
        :mod:`cxrgen.synthetic.truth`); no reader reads it, only the report's borderline and shortcut checks."""
        return self.path / TRUTH_FILE


@dataclass(frozen=True)
class StudyDir:
    """The study's ``out`` folder."""

    path: Path

    @property
    def config(self) -> Path:
        """The resolved study file (absolute paths, every default written out)."""
        return self.path / RESOLVED_CONFIG

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.parquet"

    @property
    def reading_notes(self) -> Path:
        return self.path / READING_NOTES_FILE

    @property
    def splits(self) -> Path:
        return self.path / "splits.parquet"

    @property
    def excluded(self) -> Path:
        return self.path / EXCLUDED_FILE

    @property
    def verify_stamp(self) -> Path:
        """What ``excluded.csv`` was made from, so verify is skipped when nothing changed."""
        return self.path / "verify.json"

    @property
    def caches(self) -> Path:
        return self.path / "cache"

    @property
    def embeddings(self) -> Path:
        """Frozen-backbone features of the caches, for linear probes (``cxrgen.learn.embed``)."""
        return self.path / "embeddings"

    @property
    def results(self) -> Path:
        return self.path / "results"

    @property
    def job_logs(self) -> Path:
        """submitit's folder of job scripts and logs (``launcher.folder`` overrides it)."""
        return self.path / "jobs"

    @property
    def jobs(self) -> Path:
        """``jobs.json``: the last launcher submission's job ids, read to refuse a second one while they live."""
        return self.path / "jobs.json"

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    def subsample(self, configuration: str) -> Path:
        """``runs/<configuration>/subsample.parquet``: the recorded training and validation subsample of a
        size-matched or learning-curve configuration (``image_id, dataset, patient_id, split``), shared by its
        architectures and seeds (:mod:`cxrgen.data.subsample`)."""
        return self.runs / configuration / "subsample.parquet"

    def run(self, configuration: str, arch: str, seed: int | None = None) -> RunDir:
        """The run folder; ``seed`` None is the single-seed layout (no ``seed-<N>`` level).

        Which layout a study uses follows from its seeds: ask :meth:`cxrgen.study.workspace.Study.run`.
        """
        folder = self.runs / configuration / arch
        return RunDir(folder if seed is None else folder / f"{SEED_PREFIX}{seed}")

    def predictions_files(self) -> list[Path]:
        """Every ``runs/<configuration>/<arch>[/seed-<N>]/predictions/<test_set>.parquet``, single-seed runs first."""
        return [
            *sorted(self.runs.glob("*/*/predictions/*.parquet")),
            *sorted(self.runs.glob(f"*/*/{SEED_PREFIX}*/predictions/*.parquet")),
        ]


class StudyFolderGone(CxrgenError):
    """The study folder was removed (or moved) while a command wrote into it."""


def study_folder_of(path: Path) -> Path | None:
    """The study folder holding ``path``, a file of a run (the parent of its ``runs`` folder); None outside runs."""
    for folder in Path(path).parents:
        if folder.name == "runs":
            return folder.parent
    return None


def vanished_study(path: Path) -> Path | None:
    """The study folder of run file ``path`` when that folder no longer exists; None while it does (or outside runs).

    A run writes into its study folder for hours; a folder removed meanwhile must stop the run by name, not be
    quietly recreated (holding one run and none of the study) or reported as a full disk.
    """
    study = study_folder_of(path)
    return study if study is not None and not study.is_dir() else None


def require_study_folder(path: Path) -> None:
    """Raise :class:`StudyFolderGone` before writing run file ``path`` into a study folder that no longer exists."""
    study = vanished_study(path)
    if study is not None:
        raise StudyFolderGone(
            f"the study folder {study} no longer exists (removed or moved while the run was writing): could not "
            f"write {path}"
        )
