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


def test_only_the_checklist_and_estimates_write_the_full_reports_bytes(tmp_path: Path) -> None:
    full = build_report(make_study(tmp_path / "full", archs=("densenet121",), patients=20, reference=False),
                        review=False)
    study = make_study(tmp_path / "only", archs=("densenet121",), patients=20, reference=False)
    results = build_report(study, review=False, only=["tripod", "estimates"])
    written = _csvs(results)
    assert set(written) == {"tripod_ai.csv", "sample_size.csv", "development_vs_evaluation.csv", "estimates.csv",
                            "estimates_summary.csv"}
    assert written == {name: data for name, data in _csvs(full).items() if name in written}
    assert not (results / "report.html").exists() and not (results / "figures").exists()


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


class _Planted:
    """A pickle whose loading creates ``path`` (as any code could run): the cache must never load it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


def test_cache_files_not_signed_by_the_users_key_are_never_unpickled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import hmac
    import pickle
    import stat

    from cxrgen.report.units import key_path, sign

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    study = make_study(tmp_path / "study", archs=("densenet121",), patients=20, reference=False)
    results = build_report(study, review=False)
    key = key_path()
    assert key == tmp_path / "xdg" / "cxrgen" / "report-cache.key"
    assert len(key.read_bytes()) == 32 and stat.S_IMODE(key.stat().st_mode) == 0o600
    expected = {name: data for name, data in _csvs(results).items() if name != "notes.csv"}

    entries = sorted((results / ".cache").glob("*/*.pkl"))
    assert entries
    for path in entries:  # every entry verifies under this user's key
        data = path.read_bytes()
        assert hmac.compare_digest(data[:32], sign(key.read_bytes(), f"{path.parent.name}/{path.stem}", data[32:]))

    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Planted(marker))
    wrong, other_user = entries[0], entries[-1]
    wrong.write_bytes(hashlib.sha256(b"not a key").digest() + payload)  # a valid pickle, a wrong signature
    other_key = bytes(range(32))  # "another user": a correct signature under their own key
    other_user.write_bytes(sign(other_key, f"{other_user.parent.name}/{other_user.stem}", payload) + payload)

    caplog.set_level(logging.DEBUG, logger=UNITS)
    caplog.clear()
    results = build_report(study, review=False)
    assert not marker.exists()
    assert sum(_computed(caplog).values()) == 2  # both planted entries recomputed
    assert {name: data for name, data in _csvs(results).items() if name != "notes.csv"} == expected
    for path in (wrong, other_user):  # overwritten with this user's signed result
        data = path.read_bytes()
        assert hmac.compare_digest(data[:32], sign(key.read_bytes(), f"{path.parent.name}/{path.stem}", data[32:]))
    caplog.clear()
    build_report(study, review=False)
    assert _computed(caplog) == {} and not marker.exists()
