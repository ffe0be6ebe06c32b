from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cxrgen.study.config import ConfigError, load_study

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

MINIMAL = """\
name: tiny
out: runs/tiny
datasets:
  nih: {reader: nih, root: data/nih}
configurations:
  - {name: nih, train: [nih], internal: [nih]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_paper_config_encodes_the_recipe() -> None:
    config = load_study(CONFIGS / "paper.yaml")
    assert config.labels == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert config.uncertainty_for("Cardiomegaly") == "zeros" and config.uncertainty_for("Edema") == "ones"
    assert config.split_for("nih").fractions == {"train": 0.72, "val": 0.08, "test": 0.20}
    assert config.split_for("mimic").method == "official"
    assert (config.train.batch_size, config.train.lr, config.train.lr_decay, config.train.epsilon) == (
        32, 1e-3, 1e-5, 1e-7,
    )  # fmt: skip
    assert [c.name for c in config.configurations] == ["chexpert", "nih", "both"]
    assert config.configurations[2].train == ["chexpert", "nih"]
    assert config.reference is not None and len(config.reference.table1) == 12
    cell = next(c for c in config.reference.table1 if c.arch == "densenet121" and c.configuration == "nih")
    assert cell.kind == "internal" and cell.auc["Cardiomegaly"] == 0.905
    assert config.reference.counts["nih"]["images"]["test"] == 22_294


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    config = load_study(write(tmp_path, MINIMAL))
    assert config.out == (tmp_path / "runs" / "tiny").resolve()
    assert config.datasets["nih"].root == (tmp_path / "data" / "nih").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "epochs: 3\n", r"study\.yaml: epochs: unknown key"),
        (MINIMAL.replace("{reader: nih,", "{reader: nih, colour: red,"), "datasets.nih.colour: unknown key"),
        (MINIMAL + "name: again\n", r"study\.yaml: duplicate key 'name' at line 7 \(first at line 1\)"),
        (MINIMAL + "train: {batch_size: many}\n", "train.batch_size: Input should be a valid integer"),
        (MINIMAL + "blank: maybe\n", "blank: Input should be 'zeros' or 'ignore'"),
        (MINIMAL.replace("internal: [nih]", "internal: [chexpert]"), "unknown dataset 'chexpert'"),
        (MINIMAL.replace("name: tiny", "name: ../escape"), "not a safe name"),
        (MINIMAL + "splits: {nih: {fractions: {train: 0.5, test: 0.2}}}\n", "sum to 1"),
        (MINIMAL + "train: {seeds: [0, 4294967296]}\n", "train.seeds.1: .*less than or equal to 4294967295"),
        (MINIMAL + "train: {seed: -1}\n", "train.seed: Input should be greater than or equal to 0"),
        ("- a list\n", "expected a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
        (MINIMAL + "x: !!python/object/apply:os.system ['echo hacked']\n", "not valid YAML"),
    ],
)
def test_bad_study_files_name_the_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read study file"):
        load_study(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    from cxrgen.study.config import StudyConfig, dump_resolved

    config = load_study(write(tmp_path, MINIMAL))
    again = StudyConfig.model_validate(yaml.safe_load(dump_resolved(config)))
    assert again == config
