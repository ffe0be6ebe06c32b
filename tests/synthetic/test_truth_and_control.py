"""The synthetic world's truth side file and the no-shortcut control world."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.study.layout import DatasetDir
from cxrgen.synthetic import HOSPITALS, write_synthetic
from cxrgen.synthetic.paper_sites import plan_chexpert, plan_nih
from cxrgen.synthetic.phantom import detector_shape, render_frontal
from cxrgen.synthetic.truth import true_ctr, truth_files


def _device_rates(tasks: list) -> tuple[float, float]:
    frontal = [t for t in tasks if t.view in ("PA", "AP")]
    cardio = np.array([dict(t.signs).get("Cardiomegaly", 0.0) > 0 for t in frontal])
    device = np.array([t.device for t in frontal])
    return float(device[cardio].mean()), float(device[~cardio].mean())


def test_true_ctr_is_the_ratio_the_renderer_draws() -> None:
    _, tasks = plan_chexpert(3, 0.05, 64)
    frontal = [t for t in tasks if t.view in ("PA", "AP")][:12]
    for task in frontal:
        rng = np.random.default_rng(np.random.SeedSequence([3, HOSPITALS[task.hospital].code, task.serial + 1]))
        detector = detector_shape(HOSPITALS[task.hospital].acquisition, task.shape)
        _, geometry = render_frontal(rng, dict(task.signs), detector, device=task.device)
        assert true_ctr(task, 3) == geometry.cardiothoracic_ratio
    lateral = next(t for t in tasks if t.view not in ("PA", "AP"))
    assert np.isnan(true_ctr(lateral, 3))
    truth = pd.read_parquet(io.BytesIO(truth_files(tasks, 3)["chexpert/truth.parquet"]))
    assert len(truth) == len(tasks)
    assert truth["path"].iloc[0] == tasks[0].path.removeprefix("chexpert/")
    assert truth["device"].sum() == sum(t.device for t in tasks)


def _cardiomegaly_rate(tasks: list) -> float:
    return float(np.mean([dict(t.signs).get("Cardiomegaly", 0.0) > 0 for t in tasks]))


def test_no_shortcut_world_lacks_only_the_pacemaker_pairing() -> None:
    files, tasks = plan_nih(0, 0.5, 64)
    control_files, control_tasks = plan_nih(0, 0.5, 64, world="control")
    assert files.keys() != set() and len(files) == len(control_files)
    assert abs(_cardiomegaly_rate(tasks) - _cardiomegaly_rate(control_tasks)) < 0.05  # same hospital otherwise
    with_cardio, without = _device_rates(tasks)
    assert with_cardio > 0.6 and without < 0.06  # the shortcut: pacemakers come with Cardiomegaly
    c_with, c_without = _device_rates(control_tasks)
    assert abs(c_with - c_without) < 0.05


def test_written_world_has_truth_beside_each_hospital(tmp_path: Path) -> None:
    """Where the study layout looks for it (the writer spells the name itself: synthetic imports no study code)."""
    out = write_synthetic(tmp_path / "w", seed=0, scale=0.03, image_size=48, shortcut=False)
    for hospital in ("chexpert", "nih", "mimic"):
        truth = pd.read_parquet(DatasetDir(out / hospital).truth)
        assert all((out / hospital / p).is_file() for p in truth["path"])
        frontal = truth["view"].isin(["PA", "AP"])
        assert truth.loc[frontal, "ctr"].between(0.3, 0.7).all() and truth.loc[~frontal, "ctr"].isna().all()
    assert '"shortcut": false' in (out / ".cxrgen-synthetic.json").read_text()
