"""Readers own their options: a reader registers its options model, and the study file's keys are checked
against it at load time, named ``datasets.<name>.<key>``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cxrgen.sources import READERS, ReaderOptions, register
from cxrgen.sources.common import SourceError
from cxrgen.study.config import ConfigError, DatasetConfig, load_study
from helpers.faults import study_yaml


class ToyOptions(ReaderOptions):
    level: int = 1


@pytest.fixture
def toy_reader() -> Iterator[list[ToyOptions]]:
    seen: list[ToyOptions] = []

    @register("toy", options=ToyOptions, labels={"Pleural Effusion": "effusion"})
    def read(root: Path, *, name: str, labels: list[str], options: ToyOptions) -> pd.DataFrame:
        seen.append(options)
        return pd.DataFrame()

    yield seen
    del READERS["toy"]


def _study(tmp_path: Path, entry: dict[str, object]) -> Path:
    study = yaml.safe_load(study_yaml(str(tmp_path / "out")))
    study["datasets"]["chexpert"] = {"root": str(tmp_path / "data"), **entry}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    return tmp_path / "study.yaml"


def test_a_new_reader_brings_its_own_keys(tmp_path: Path, toy_reader: list[ToyOptions]) -> None:
    config = load_study(_study(tmp_path, {"reader": "toy", "level": 3}))
    spec = config.datasets["chexpert"]
    assert spec.options() == {"level": 3}
    READERS["toy"](tmp_path, name="chexpert", labels=[], options=spec.options())
    assert toy_reader == [ToyOptions(level=3)]
    assert READERS["toy"].spelling("Pleural Effusion") == "effusion"
    with pytest.raises(ConfigError, match=r"datasets\.chexpert\.level: Input should be a valid integer"):
        load_study(_study(tmp_path, {"reader": "toy", "level": "high"}))
    with pytest.raises(ConfigError, match=r"datasets\.chexpert\.csv: unknown key"):  # another reader's key
        load_study(_study(tmp_path, {"reader": "toy", "csv": "train.csv"}))
    with pytest.raises(ValueError, match="registered twice"):
        register("toy", options=ToyOptions)(lambda root, **kw: pd.DataFrame())


def test_an_unknown_reader_is_named_with_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"datasets\.chexpert\.reader: unknown dataset reader 'chexpret'.*'chexpert'"):
        load_study(_study(tmp_path, {"reader": "chexpret"}))
    with pytest.raises(SourceError, match=r"nih reader: colour: unknown key"):
        READERS["nih"](tmp_path, name="nih", labels=[], options={"colour": "red"})


def test_run_fingerprints_keep_the_shape_runs_recorded() -> None:
    """The dataset part of a fingerprint as ``model_dump(exclude={"root"})`` gave it before readers owned
    their options: a changed shape would make every existing run refuse to resume."""
    entry = DatasetConfig(reader="mimic", root=Path("/data/mimic"), labels="negbio")
    assert entry.fingerprint() == {
        "reader": "mimic", "csv": None, "labels": "negbio", "metadata": None, "unmatched": None,
        "labelled_by": None, "readers": None, "images": None,
    }  # fmt: skip
    assert list(entry.fingerprint()) == ["reader", "csv", "labels", "metadata", "unmatched", "labelled_by",
                                         "readers", "images"]  # fmt: skip
