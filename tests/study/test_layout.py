"""The study layout is a contract (DESIGN.md sections 4 and 8): outside scripts read these paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrgen.errors import CxrgenError
from cxrgen.study.layout import RunDir, StudyDir


def test_study_and_run_paths_are_the_documented_ones(tmp_path: Path) -> None:
    study = StudyDir(tmp_path)
    assert [study.config, study.manifest, study.splits, study.excluded, study.reading_notes] == [
        tmp_path / name
        for name in ("config.yaml", "manifest.parquet", "splits.parquet", "excluded.csv", "reading_notes.csv")
    ]
    assert study.caches == tmp_path / "cache" and study.results == tmp_path / "results"
    assert (study.embeddings, study.jobs, study.job_logs) == (
        tmp_path / "embeddings", tmp_path / "jobs.json", tmp_path / "jobs"
    )
    run = study.run("both", "densenet121")
    base = tmp_path / "runs" / "both" / "densenet121"
    assert run.path == base  # one seed: no seed level, so single-seed study folders keep working
    assert run.best_checkpoint == base / "checkpoints" / "best.ckpt"
    assert run.last_checkpoint == base / "checkpoints" / "last.ckpt"
    assert (run.done, run.fingerprint, run.metrics, run.config, run.auc, run.validation) == tuple(
        base / name
        for name in ("done.json", "run.json", "metrics.csv", "config.yaml", "auc.csv", "validation.parquet")
    )
    assert run.predictions("mimic") == base / "predictions" / "mimic.parquet"
    assert run.job == base / "job.json"
    assert study.run("both", "densenet121", 3).path == base / "seed-3"


def test_predictions_files_are_found_in_both_run_layouts(tmp_path: Path) -> None:
    study = StudyDir(tmp_path)
    single = study.run("a", "densenet121").predictions("internal")
    seeded = [study.run("b", "densenet121", seed).predictions("mimic") for seed in (2, 1)]
    for path in [*seeded, single, study.run("a", "densenet121").validation]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert study.predictions_files() == [single, *reversed(seeded)]  # validation.parquet is no test set


def test_an_unfinished_run_is_refused_by_name(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(CxrgenError, match=r"run c1/densenet121 is unfinished \(no done.json in .*--allow-unfinished"):
        run.require_finished("c1/densenet121")
    run.path.mkdir()
    run.done.write_text("{}")
    assert run.finished
    run.require_finished("c1/densenet121")
