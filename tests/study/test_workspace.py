"""A study is one object (issue 13): its settings and its folder travel together, and paths follow the folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from cxrgen.learn.train import train_run
from cxrgen.report import build_report
from cxrgen.runner.status import study_status
from cxrgen.study.config import ConfigError, dump_resolved
from cxrgen.study.workspace import Study
from helpers.report_study import LABELS, make_study
from helpers.training import ARCH, SquaresDataModule, tiny_study


def test_a_study_of_a_config_lives_in_its_out_folder(tmp_path: Path) -> None:
    config = tiny_study(tmp_path / "study")
    study = Study.of(config)
    assert study.dir.path == config.out == tmp_path / "study"
    assert study.seeds == [0]
    assert study.run("c", ARCH).path == tmp_path / "study" / "runs" / "c" / ARCH


def test_a_moved_study_folder_is_reported_where_it_now_is(tmp_path: Path) -> None:
    """The saved config still names the old ``out``; every path the report reads and writes is the new folder's."""
    made = make_study(tmp_path / "before", archs=("densenet121",), patients=30, seeds=[3, 7])
    removed = made / "runs" / "both" / "densenet121" / "seed-7" / "predictions" / "gamma.parquet"
    removed.unlink()
    moved = shutil.move(made, tmp_path / "after")
    study = Study.open(moved)
    assert study.config.out == made and not made.exists()  # the recorded out is stale
    assert study.dir.path == moved
    assert study.run("both", "densenet121", 7).path == moved / "runs" / "both" / "densenet121" / "seed-7"
    results = build_report(moved, review=False)
    assert results == moved / "results" and (results / "report.html").is_file()
    assert not made.exists()  # nothing was written to the folder the config names
    missing = pd.read_csv(results / "missing.csv")
    assert missing[["configuration", "seed", "test_set"]].values.tolist() == [["both", 7, "gamma"]]
    assert moved / missing.loc[0, "expected"] == moved / removed.relative_to(made)
    auc = pd.read_csv(results / "auc.csv")
    assert len(auc) == (2 * 2 * 2 - 1) * len(LABELS)  # configurations x seeds x test sets, less the removed file
    rows = study_status(moved)  # status reads the moved folder's runs too
    assert rows["run"].tolist() == [f"{c}/densenet121/seed-{s}" for c in ("alpha", "both") for s in (3, 7)]


def test_a_finished_run_in_a_moved_study_folder_is_found_there_not_retrained(tmp_path: Path) -> None:
    config = tiny_study(tmp_path / "before", max_epochs=1)
    first = train_run(Study.of(config), "c", ARCH, datamodule=SquaresDataModule())
    (tmp_path / "before" / "config.yaml").write_text(dump_resolved(config))
    done = (first / "done.json").read_bytes()
    moved = shutil.move(tmp_path / "before", tmp_path / "after")
    again = train_run(Study.open(moved), "c", ARCH, datamodule=SquaresDataModule())
    assert again == moved / "runs" / "c" / ARCH and (again / "done.json").read_bytes() == done
    assert not (tmp_path / "before").exists()


def test_opening_a_folder_that_is_no_study_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"{tmp_path}: no config.yaml; is it a study directory"):
        Study.open(tmp_path)
    (tmp_path / "config.yaml").write_text("name: x\nout: somewhere\nlabels: [A]\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"config.yaml.*bogus"):
        Study.open(tmp_path)
