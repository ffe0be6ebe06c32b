"""The report's cache and workers (issue 30): a rerun recomputes only what a new run touches; ``--only`` writes the
sections asked for; ``--workers N`` writes the same bytes as one worker."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest

from cxrgen.errors import CxrgenError
from cxrgen.report import build_report
from cxrgen.report.build import SECTIONS, parse_sections
from helpers.report_study import make_study

UNITS = "cxrgen.report.units"


def _computed(caplog: pytest.LogCaptureFixture) -> Counter[str]:
    """Sections of the pieces computed (not read from the cache) since the last ``caplog.clear()``."""
    return Counter(r.getMessage().split()[1].split("/")[0] for r in caplog.records
                   if r.name == UNITS and r.getMessage().startswith("computed "))


def _csvs(results: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(results.glob("*.csv"))}


def test_rerun_after_one_new_run_recomputes_only_what_it_touches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = make_study(tmp_path, archs=("densenet121",), patients=30, reference=False)
    caplog.set_level(logging.DEBUG, logger=UNITS)
    build_report(study, review=False)
    # 2 configurations x 1 arch x (internal, gamma) = 4 files; pairs: 2 internal-vs-external, 1 multi-vs-single
    assert _computed(caplog) == {"auc": 4, "seeds": 4, "calibration": 4, "comparisons": 3, "overview": 1,
                                 "figures": 5, "shift": 4}
    caplog.clear()
    build_report(study, review=False)
    assert _computed(caplog) == {}  # nothing changed: everything from the cache

    # one new run: runs/alpha/resnet50 with its internal and gamma files
    shutil.copytree(study / "runs" / "alpha" / "densenet121", study / "runs" / "alpha" / "resnet50")
    caplog.clear()
    results = build_report(study, review=False)
    # its 2 files; pairs: its internal vs external, and resnet50 vs densenet121 on alpha's internal and gamma;
    # figures: its ROC and reliability curves and the gap figure (its comparisons changed); overview: one piece
    assert _computed(caplog) == {"auc": 2, "seeds": 2, "calibration": 2, "comparisons": 3, "overview": 1,
                                 "figures": 3, "shift": 2}
    cached = _csvs(results)

    fresh = make_study(tmp_path / "fresh", archs=("densenet121",), patients=30, reference=False)
    shutil.copytree(fresh / "runs" / "alpha" / "densenet121", fresh / "runs" / "alpha" / "resnet50")
    assert _csvs(build_report(fresh, review=False, cache=False)) == cached  # the cache changes no byte
    assert not (fresh / "results" / ".cache").exists()


def test_only_writes_the_sections_asked_for(tmp_path: Path) -> None:
    study = make_study(tmp_path, archs=("densenet121",), patients=20, reference=False)
    results = build_report(study, review=False, only=["findings", "auc"])
    assert {p.name for p in results.iterdir() if p.is_file()} == {"findings.csv", "auc.csv", "config.yaml"}


def test_unknown_section_is_one_error_line_naming_the_known_ones(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxrgen.cli import app

    with pytest.raises(CxrgenError, match="known: auc, seeds"):
        parse_sections("auc,findngs")
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--only", "findngs"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --only: unknown section(s) findngs")
    assert all(name in lines[0] for name in SECTIONS)


def test_workers_write_the_same_bytes_as_one(tmp_path: Path) -> None:
    one = make_study(tmp_path / "one", patients=30, seeds=[0, 1])
    two = make_study(tmp_path / "two", patients=30, seeds=[0, 1])
    a = _csvs(build_report(one, review=False, workers=1, cache=False))
    b = _csvs(build_report(two, review=False, workers=2, cache=False))
    assert a.keys() == b.keys() and "notes.csv" in a and "comparisons.csv" in a
    assert a == b
