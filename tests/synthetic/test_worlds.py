"""The named synthetic worlds (issue 24): each has its planted property, measured from the files it writes.

Prevalences are read back through the project's readers (a finding reported present or hedged is drawn present),
pacemakers from ``truth.parquet``, equipment from image statistics; the shipped and control worlds keep the
bytes they had before the worlds existed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cxrgen.cli import app
from cxrgen.sources.registry import get_reader
from cxrgen.study.layout import DatasetDir
from cxrgen.synthetic import write_synthetic
from cxrgen.synthetic.hospitals import HOSPITALS
from cxrgen.synthetic.more_sites import SITES
from cxrgen.synthetic.worlds import CHANGED_EQUIPMENT, REFERENCE_EQUIPMENT, in_world

LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
OPTIONS: dict[str, dict[str, str]] = {"chexpert": {"csv": "train.csv"}, "nih": {}, "mimic": {"labels": "chexpert"}}
#: Digests of ``_content`` over every file of ``write_synthetic(seed=0, scale=0.03, image_size=48)``, recorded
#: from the writer before the worlds existed (commit 573fc7d): the shipped and control worlds must not move.
SHIPPED_DIGEST = "58e3a362f8f201927478261cfbc4ebd6336fe990df16b9d2155c35b299e68bfc"
CONTROL_DIGEST = "b9103a8e7fc08dea1c932193154ff54ad26ef8cbc25128344c46e2e5d1130077"
#: The same for the three more sites (``scale=0.02``), DICOM files left out (their compressed bytes follow the
#: codec's version; VinDr-CXR's labels and BRAX's PNG copies stay in).
MORE_SITES_DIGEST = "e4e63656e59587d4874df62817b24e2df0ea696eb4f6314677bb1a2029a3aa2b"


def _content(path: Path) -> bytes:
    """What a file holds, independent of encoder versions: pixels for images, rows for parquet, else bytes."""
    if path.suffix in (".png", ".jpg"):
        with Image.open(path) as image:
            return f"{image.mode}{image.size}".encode() + image.tobytes()
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_csv(index=False).encode()
    return path.read_bytes()


def _digest(root: Path) -> str:
    total = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix not in (".dicom", ".dcm")):
        total.update(str(path.relative_to(root)).encode() + hashlib.sha256(_content(path)).digest())
    return total.hexdigest()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("worlds")
    return {w: write_synthetic(root / w, seed=0, scale=0.3, image_size=64, world=w)
            for w in ("prevalence", "acquisition", "reversed")}  # fmt: skip


def _read(out: Path, hospital: str) -> pd.DataFrame:
    return get_reader(hospital)(out / hospital, name=hospital, labels=LABELS, options=OPTIONS[hospital])


def _present(frame: pd.DataFrame) -> pd.Series:
    """Per label, the share of images whose report calls the finding present or hedges (the drawn prevalence)."""
    return pd.Series({label: frame[f"raw_{label}"].isin([1.0, -1.0]).mean() for label in LABELS})


def test_shipped_and_control_worlds_keep_their_bytes(tmp_path: Path) -> None:
    shipped = write_synthetic(tmp_path / "shipped", seed=0, scale=0.03, image_size=48)
    named = write_synthetic(tmp_path / "named", seed=0, scale=0.03, image_size=48, world="shipped")
    control = write_synthetic(tmp_path / "control", seed=0, scale=0.03, image_size=48, world="control")
    alias = write_synthetic(tmp_path / "alias", seed=0, scale=0.03, image_size=48, shortcut=False)
    assert _digest(shipped) == _digest(named) == SHIPPED_DIGEST
    assert _digest(control) == _digest(alias) == CONTROL_DIGEST
    assert (control / ".cxrgen-synthetic.json").read_text() == (alias / ".cxrgen-synthetic.json").read_text()
    sites = ("padchest", "vindr", "brax")
    more = write_synthetic(tmp_path / "more", seed=0, scale=0.02, image_size=48, hospitals=sites)
    assert _digest(more) == MORE_SITES_DIGEST


def test_prevalence_world_plants_ten_percent_at_home_and_forty_away(worlds: dict[str, Path]) -> None:
    out = worlds["prevalence"]
    for hospital in ("chexpert", "nih"):
        present = _present(_read(out, hospital))
        assert present.between(0.06, 0.14).all(), (hospital, present)
        assert abs(present.mean() - 0.10) < 0.02, (hospital, present)
    mimic = _read(out, "mimic")
    for part in (mimic, mimic.loc[mimic["official_split"] == "test"]):  # the enriched test split too
        present = _present(part)
        assert present.between(0.3, 0.5).all() and abs(present.mean() - 0.40) < 0.04, present
    truth = pd.read_parquet(DatasetDir(out / "nih").truth)
    assert truth["device"].mean() < 0.1  # no shortcut: one pacemaker rate, 5 %
    assert '"world": "prevalence"' in (out / ".cxrgen-synthetic.json").read_text()
    assert (out / "study.yaml").read_text().startswith("# World: prevalence")


def _equipment(out: Path, hospital: str, n: int = 80) -> tuple[float, float]:
    """Mean brightness and mean absolute horizontal pixel step (noise and sharpness) of the first frontal images."""
    truth = pd.read_parquet(DatasetDir(out / hospital).truth)
    paths = truth.loc[truth["view"].isin(["PA", "AP"]), "path"][:n]
    pixels = [np.asarray(Image.open(out / hospital / p).convert("L"), dtype=np.float64) / 255 for p in paths]
    steps = [np.abs(np.diff(p, axis=1)).mean() for p in pixels]
    return float(np.mean([p.mean() for p in pixels])), float(np.mean(steps))


def test_acquisition_world_changes_only_the_away_equipment(worlds: dict[str, Path]) -> None:
    prevalence, acquisition = worlds["prevalence"], worlds["acquisition"]
    for hospital in ("chexpert", "nih"):  # home: the same files as in the prevalence world, byte for byte
        files = sorted(p.relative_to(prevalence) for p in (prevalence / hospital).rglob("*") if p.is_file())
        assert files and all((prevalence / f).read_bytes() == (acquisition / f).read_bytes() for f in files)
    present = _present(_read(acquisition, "mimic"))
    assert abs(present.mean() - 0.10) < 0.03, present  # the labels as at home
    before, after = _equipment(prevalence, "mimic"), _equipment(acquisition, "mimic")
    assert after[0] - before[0] > 0.1  # brighter (gamma 0.5, narrower window)
    assert after[1] > 1.25 * before[1]  # noisier (three times the noise, more than the extra blur smooths)
    for hospital in (*HOSPITALS.values(), *SITES.values()):  # six hospitals: one equipment everywhere but away
        assert in_world(hospital, "prevalence").acquisition == REFERENCE_EQUIPMENT
        planted = 0.4 if hospital.name == "mimic" else 0.1
        assert set(in_world(hospital, "prevalence").prevalence.values()) == {planted}
        assert set(in_world(hospital, "acquisition").prevalence.values()) == {0.1}
        expected = CHANGED_EQUIPMENT if hospital.name == "mimic" else REFERENCE_EQUIPMENT
        assert in_world(hospital, "acquisition").acquisition == expected


def _pacemaker_rates(out: Path) -> tuple[float, float]:
    """P(pacemaker | Cardiomegaly) and P(pacemaker | no Cardiomegaly) at the NIH-like site, per image."""
    frame = _read(out, "nih").merge(pd.read_parquet(DatasetDir(out / "nih").truth), on="path")
    card = frame["raw_Cardiomegaly"] == 1.0
    return float(frame.loc[card, "device_y"].mean()), float(frame.loc[~card, "device_y"].mean())


def test_reversed_world_puts_pacemakers_on_the_absence_of_cardiomegaly(worlds: dict[str, Path], tmp_path: Path) -> None:
    with_card, without = _pacemaker_rates(worlds["reversed"])
    # the rates follow the drawn sign: a positive report whose sign was missed (5 %) draws as a negative
    assert with_card < 0.2 and without > 0.7 and without - with_card > 0.6, (with_card, without)
    shipped = write_synthetic(tmp_path / "shipped", seed=0, scale=0.3, image_size=32, hospitals=("nih",))
    with_card, without = _pacemaker_rates(shipped)
    # the shipped shortcut, mirrored above
    assert with_card > 0.6 and without < 0.1 and with_card - without > 0.6, (with_card, without)
    assert '"world": "reversed"' in (worlds["reversed"] / ".cxrgen-synthetic.json").read_text()


def test_another_world_in_a_used_folder_is_refused(tmp_path: Path) -> None:
    out = write_synthetic(tmp_path / "w", seed=0, scale=0.03, image_size=32, world="reversed")
    with pytest.raises(ValueError, match="choose an empty folder"):
        write_synthetic(out, seed=0, scale=0.03, image_size=32, world="prevalence")
    with pytest.raises(ValueError, match="choose an empty folder"):
        write_synthetic(out, seed=0, scale=0.03, image_size=32)
    with pytest.raises(ValueError, match="unknown synthetic world 'flat'"):
        write_synthetic(tmp_path / "x", world="flat")
    with pytest.raises(ValueError, match="cannot be combined"):
        write_synthetic(tmp_path / "x", shortcut=False, world="reversed")


def test_cli_world_flag_and_its_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["synthesize", str(tmp_path / "w"), "--scale", "0.03", "--image-size", "32", "--workers", "1"]
    assert runner.invoke(app, [*args, "--world", "acquisition"]).exit_code == 0
    assert '"world": "acquisition"' in (tmp_path / "w" / ".cxrgen-synthetic.json").read_text()
    refused = runner.invoke(app, [*args, "--world", "reversed"])
    assert refused.exit_code == 1 and "error: " in refused.output and "choose an empty folder" in refused.output
    unknown = runner.invoke(app, ["synthesize", str(tmp_path / "u"), "--world", "flat"])
    assert unknown.exit_code == 1 and "error: unknown synthetic world 'flat'" in unknown.output
    assert not (tmp_path / "u").exists() or not any((tmp_path / "u").iterdir())
    alias = runner.invoke(app, ["synthesize", str(tmp_path / "a"), *args[2:], "--no-shortcut"])
    named = runner.invoke(app, ["synthesize", str(tmp_path / "c"), *args[2:], "--world", "control"])
    assert alias.exit_code == named.exit_code == 0
    claimed = (tmp_path / "a" / ".cxrgen-synthetic.json").read_text()
    assert claimed == (tmp_path / "c" / ".cxrgen-synthetic.json").read_text() and '"shortcut": false' in claimed
