"""Commands that only read metadata import no torch, timm or Lightning (DESIGN.md section 4).

Each command runs in a fresh interpreter through ``cxrgen.cli.main``; the wrapper then prints which heavy
packages ``sys.modules`` holds. ``plan`` needs the architectures' input sizes (static registry data), and a
``prepare`` with nothing left to do checks every stage, the caches included, before it can say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.fresh_cli import run_fresh
from helpers.native import NIH_ROWS, nih_data_entry

HEAVY = ("torch", "timm", "lightning", "torchvision")

STUDY = """\
name: light
out: out
datasets:
  nih: {reader: nih, root: nih}
labels: [Cardiomegaly, Edema]
architectures: [densenet121]
splits:
  nih: {method: official, val_fraction: 0.5}
preprocess: {clahe: false, engine: opencv}
configurations:
  - {name: nih, train: [nih], internal: [nih], external: []}
"""


def run_cli(*args: str, cwd: Path) -> dict[str, object]:
    """Run ``cxrgen <args>`` in a new interpreter; its exit code and the heavy packages it imported."""
    code, heavy, output = run_fresh(*args, cwd=cwd, heavy=HEAVY)
    assert code == 0, output
    return {"code": code, "heavy": heavy}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    nih_data_entry(tmp_path / "nih", "v2020", images=False)
    rng = np.random.default_rng(0)
    (tmp_path / "nih" / "images").mkdir()
    for name, *_ in NIH_ROWS:
        pixels = rng.integers(0, 256, (72, 64), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "nih" / "images" / name)
    (tmp_path / "study.yaml").write_text(STUDY)
    return tmp_path / "study.yaml"


def test_help_and_plan_import_no_torch(study: Path) -> None:
    assert run_cli("--help", cwd=study.parent)["heavy"] == []
    assert run_cli("plan", str(study), cwd=study.parent)["heavy"] == []


def test_finished_prepare_imports_no_torch(study: Path) -> None:
    run_cli("prepare", str(study), "--workers", "1", cwd=study.parent)
    assert (study.parent / "out" / "cache" / "nih-224-opencv-noclahe" / "images.npy").is_file()
    again = run_cli("prepare", str(study), "--workers", "1", cwd=study.parent)
    assert again["heavy"] == []
    assert run_cli("status", str(study.parent / "out"), cwd=study.parent)["heavy"] == []


def test_report_reading_results_imports_no_torch(tmp_path: Path) -> None:
    from helpers.report_study import make_study

    folder = make_study(tmp_path, patients=30)
    assert run_cli("report", str(folder), cwd=tmp_path)["heavy"] == []
    assert (folder / "results" / "report.html").is_file()


def test_report_runs_with_native_thread_pools_at_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BLAS and OpenMP pools keep to one thread inside the report (small products; a loaded node)."""
    from threadpoolctl import threadpool_info, threadpool_limits
    from typer.testing import CliRunner

    import cxrgen.report
    from cxrgen.cli import app

    seen: list[int] = []

    def fake_build_report(study_dir: Path, **_: object) -> Path:
        seen.extend(pool["num_threads"] for pool in threadpool_info())
        return tmp_path

    monkeypatch.setattr(cxrgen.report, "build_report", fake_build_report)
    with threadpool_limits(limits=2):  # as on a machine whose pools start with several threads
        result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {1}
