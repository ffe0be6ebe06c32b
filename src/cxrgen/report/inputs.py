"""What the report reads from a study directory: the resolved config, the cohort files and every predictions file.

The report works on artifacts only (DESIGN.md section 4), so it also serves a user who copied predictions files
trained elsewhere into ``runs/<configuration>/<arch>/predictions/``: every file found there is evaluated, and
names the config does not know are kept (an unknown test set counts as external unless it is named
``internal``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from cxrgen.data.verify import excluded_test_counts, read_excluded
from cxrgen.errors import CxrgenError
from cxrgen.metrics.evaluate import UNFINISHED_KEY, read_predictions
from cxrgen.study.config import StudyConfig
from cxrgen.study.layout import SEED_PREFIX, RunDir
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import parquet_metadata

log = logging.getLogger(__name__)

Kind = Literal["internal", "external"]
INTERNAL = "internal"


@dataclass(frozen=True)
class StudyInputs:
    """The study-level artifacts the report needs.

    Attributes:
        study: The study folder and its resolved config (``config.yaml``).
        manifest: ``manifest.parquet`` (one row per image, labels after the uncertainty policy).
        splits: ``splits.parquet`` or None when ``prepare`` stopped before the splits.
        excluded: ``excluded.csv`` (images that failed to decode) or None when verify has not run.
        reading_notes: ``reading_notes.csv`` (rows the readers left out, and why) or None for older studies.
    """

    study: Study
    manifest: pd.DataFrame
    splits: pd.DataFrame | None
    excluded: pd.DataFrame | None
    reading_notes: pd.DataFrame | None = None

    @property
    def config(self) -> StudyConfig:
        return self.study.config


@dataclass(frozen=True)
class Predictions:
    """One predictions file of one run on one test set, read and validated.

    Attributes:
        configuration: Configuration name (the ``runs/<configuration>`` folder).
        arch: Architecture name (the ``runs/<configuration>/<arch>`` folder).
        test_set: ``internal`` or an external dataset name (the file stem).
        kind: ``internal`` or ``external``.
        datasets: Datasets whose test split makes up the test set (empty when the config does not say).
        path: The parquet file.
        frame: ``image_id, patient_id, y_<label>, p_<label>`` (see :func:`cxrgen.metrics.evaluate.read_predictions`).
        labels: Labels in the file, in the study's label order where the study knows them.
    """

    configuration: str
    arch: str
    test_set: str
    kind: Kind
    datasets: tuple[str, ...]
    path: Path
    frame: pd.DataFrame
    labels: list[str]
    seed: int | None = None
    #: Made by ``cxrgen predict --allow-unfinished`` from a run without ``done.json`` (marked in the report).
    unfinished: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return self.configuration, self.arch, self.test_set

    @property
    def run(self) -> RunDir:
        """The run folder the file was found in (``<run>/predictions/<test_set>.parquet``)."""
        return RunDir(self.path.parent.parent)


def load_inputs(study_dir: Path) -> StudyInputs:
    """Read config, manifest, splits and exclusions of a study directory.

    Raises:
        CxrgenError: the config or the manifest is missing or unreadable.
    """
    study = Study.open(study_dir)
    layout = study.dir
    manifest_path = layout.manifest
    if not manifest_path.is_file():
        raise CxrgenError(f"{manifest_path}: missing; run `cxrgen prepare` first")
    manifest = pd.read_parquet(manifest_path)
    splits_path = layout.splits
    splits = pd.read_parquet(splits_path) if splits_path.is_file() else None
    excluded = read_excluded(layout.path) if layout.excluded.is_file() else None
    notes_path = layout.reading_notes
    notes = pd.read_csv(notes_path, dtype={"rows": int}, keep_default_na=False) if notes_path.is_file() else None
    return StudyInputs(study, manifest, splits, excluded, notes)


def _order_key(
    inputs: StudyInputs, configuration: str, arch: str, test_set: str
) -> tuple[int, str, int, str, int, str]:
    """Sort runs in the config's order (configurations, architectures, internal then externals), others after."""
    config = inputs.config
    conf_names = [c.name for c in config.configurations]
    c_rank = conf_names.index(configuration) if configuration in conf_names else len(conf_names)
    a_rank = config.architectures.index(arch) if arch in config.architectures else len(config.architectures)
    t_names: list[str] = [INTERNAL]
    if configuration in conf_names:
        t_names = [t.name for t in config.configurations[c_rank].test_sets()]
    t_rank = t_names.index(test_set) if test_set in t_names else len(t_names)
    return c_rank, configuration, a_rank, arch, t_rank, test_set


def _describe_test_set(inputs: StudyInputs, configuration: str, test_set: str) -> tuple[Kind, tuple[str, ...]]:
    for conf in inputs.config.configurations:
        if conf.name == configuration:
            for candidate in conf.test_sets():
                if candidate.name == test_set:
                    return candidate.kind, candidate.datasets
            log.warning(
                "runs/%s: predictions for test set %r, which configuration %r does not name; reported as %s",
                configuration,
                test_set,
                configuration,
                INTERNAL if test_set == INTERNAL else "external",
            )
    kind: Kind = "internal" if test_set == INTERNAL else "external"
    datasets = (test_set,) if kind == "external" and test_set in inputs.config.datasets else ()
    return kind, datasets


def find_predictions(inputs: StudyInputs) -> list[Predictions]:
    """Read every ``runs/<configuration>/<arch>/predictions/<test_set>.parquet``, in the config's order.

    Raises:
        CxrgenError: no predictions file exists (nothing to report).
        PredictionsError: a file breaks the predictions schema; the message names it.
    """
    found = inputs.study.dir.predictions_files()
    if not found:
        raise CxrgenError(
            f"{inputs.study.dir.runs}: no predictions files (runs/<configuration>/<arch>/predictions/"
            "<test_set>.parquet); run `cxrgen study` or copy predictions there first"
        )
    study_labels = list(inputs.config.labels)
    out: list[Predictions] = []
    for path in found:
        arch_dir = path.parent.parent
        seed: int | None = None
        number = arch_dir.name.removeprefix(SEED_PREFIX)
        if arch_dir.name.startswith(SEED_PREFIX) and number.lstrip("-").isdigit():
            seed, arch_dir = int(number), arch_dir.parent
        configuration, arch, test_set = arch_dir.parent.name, arch_dir.name, path.stem
        frame, labels = read_predictions(path)
        ordered = [lab for lab in study_labels if lab in labels] + [lab for lab in labels if lab not in study_labels]
        kind, datasets = _describe_test_set(inputs, configuration, test_set)
        unfinished = parquet_metadata(path).get(UNFINISHED_KEY) == "true"
        out.append(Predictions(configuration, arch, test_set, kind, datasets, path, frame, ordered, seed, unfinished))
    out.sort(key=lambda pr: (*_order_key(inputs, *pr.key), pr.seed if pr.seed is not None else -1))
    warn_incomplete_runs(inputs, out)
    return out


#: Columns of ``results/missing.csv``: one row per configured (configuration, arch, seed, test set) without a file.
MISSING_COLUMNS: tuple[str, ...] = ("configuration", "arch", "seed", "test_set", "kind", "expected", "reason")


def missing_predictions(inputs: StudyInputs, found: Sequence[Predictions]) -> pd.DataFrame:
    """Every test set the config plans (configuration x arch x seed x test set) whose predictions file is absent.

    Without this table such a test set would vanish from every table of the report without a word. ``expected``
    is the file's path relative to the study directory; ``reason`` says whether the whole run has no predictions
    yet or only this test set is missing.
    """
    config = inputs.config
    seeds = config.train.seed_list()
    have = {(p.configuration, p.arch, seeds[0] if p.seed is None else p.seed, p.test_set) for p in found}
    rows = []
    for conf in config.configurations:
        for arch in config.architectures:
            for seed in seeds:
                run = inputs.study.run(conf.name, arch, seed)
                absent = [t for t in conf.test_sets() if (conf.name, arch, seed, t.name) not in have]
                whole = len(absent) == len(conf.test_sets())
                reason = "the run has no predictions files" if whole else "predictions file missing"
                rows += [
                    {"configuration": conf.name, "arch": arch, "seed": seed, "test_set": t.name, "kind": t.kind,
                     "expected": str(run.predictions(t.name).relative_to(inputs.study.dir.path)),
                     "reason": reason}
                    for t in absent
                ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(MISSING_COLUMNS))


def unfinished_runs(found: Sequence[Predictions]) -> list[str]:
    """``configuration/arch`` (with ``seed N`` when a study has several) of every run predicted unfinished."""
    return list(dict.fromkeys(
        f"{p.configuration}/{p.arch}" + (f" (seed {p.seed})" if p.seed is not None else "")
        for p in found if p.unfinished
    ))  # fmt: skip


def warn_incomplete_runs(inputs: StudyInputs, found: list[Predictions]) -> None:
    """Name, in warnings, what the report shows that is not a finished result, and what it cannot show.

    Unfinished runs' predictions (``--allow-unfinished``) are reported, marked; a configured test set without
    its predictions file is listed in ``missing.csv`` and at the top of the page (:func:`missing_predictions`).
    """
    for pred in found:
        if pred.unfinished:
            log.warning(
                "%s: predictions of the unfinished run %s/%s (no done.json; made with --allow-unfinished); "
                "marked (unfinished) in the report",
                pred.path, pred.configuration, pred.arch,
            )  # fmt: skip
    several = len(inputs.config.train.seed_list()) > 1
    for row in missing_predictions(inputs, found).itertuples(index=False):
        run = f"{row.configuration}/{row.arch}" + (f" (seed {row.seed})" if several else "")
        log.warning(
            "test set %r of run %s is configured but %s is missing (%s); it is left out of the report's tables "
            "and named in missing.csv and at the top of report.html (run `cxrgen predict` or `cxrgen study`)",
            row.test_set, run, inputs.study.dir.path / row.expected, row.reason,
        )  # fmt: skip


def count_excluded(inputs: StudyInputs, datasets: tuple[str, ...]) -> int | None:
    """Test-split images of ``datasets`` that failed to decode (so no model saw them); None when unknown.

    Unknown means ``excluded.csv`` or ``splits.parquet`` is absent, or the test set's datasets are not known.
    """
    if inputs.excluded is None or inputs.splits is None or not datasets:
        return None
    counts = excluded_test_counts(inputs.excluded, inputs.splits)
    return int(counts.loc[counts["dataset"].isin(datasets), "excluded"].sum())
