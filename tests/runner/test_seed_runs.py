"""Training seeds: one run per (configuration, arch, seed), the folder layout, --only, fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from cxrgen.errors import CxrgenError
from cxrgen.learn.train import run_fingerprint, train_run
from cxrgen.runner.study import planned_runs, planned_seed_runs
from cxrgen.study.config import ConfigError
from cxrgen.study.workspace import Study
from helpers.training import ARCH, SquaresDataModule, tiny_study


def test_default_is_the_single_seed_and_today_s_layout(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, seed=4)
    assert config.train.seed_list() == [4]
    assert Study.of(config).run("c", ARCH).path == tmp_path / "runs" / "c" / ARCH
    assert Study.of(config).run("c", ARCH, 4).path == tmp_path / "runs" / "c" / ARCH
    assert [(c.name, a, s) for c, a, s in planned_seed_runs(config)] == [("c", ARCH, 4)]
    # A single-seed study keeps the fingerprint it had before seeds existed: old study folders resume.
    size = config.input_size(ARCH)
    same = tiny_study(tmp_path, seed=4, seeds=[4])
    assert run_fingerprint(config, "c", ARCH, size) == run_fingerprint(same, "c", ARCH, size)
    assert "seeds" not in json.dumps(config.train.model_dump(mode="json", exclude_none=True))


def test_several_seeds_are_runs_of_their_own(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, seeds=[0, 1, 2])
    runs = [(c.name, a, s) for c, a, s in planned_seed_runs(config)]
    assert runs == [("c", ARCH, 0), ("c", ARCH, 1), ("c", ARCH, 2)]
    study = Study.of(config)
    assert study.run("c", ARCH, 1).path == tmp_path / "runs" / "c" / ARCH / "seed-1"
    assert study.run("c", ARCH).path == tmp_path / "runs" / "c" / ARCH / "seed-0"  # None: the first seed
    with pytest.raises(ConfigError, match=r"seed 5 is not one of train.seeds \[0, 1, 2\]"):
        study.run("c", ARCH, 5)
    assert (study.seed(), study.seed(2)) == (0, 2)
    assert [s for *_, s in planned_seed_runs(config, "c/" + ARCH)] == [0, 1, 2]
    assert [s for *_, s in planned_seed_runs(config, f"c/{ARCH}/2")] == [2]
    with pytest.raises(CxrgenError, match=r"seed '5' is not one of train.seeds \[0, 1, 2\]"):
        list(planned_seed_runs(config, f"c/{ARCH}/5"))
    with pytest.raises(CxrgenError, match="names no run"):
        list(planned_seed_runs(config, "d/" + ARCH))
    assert list(planned_runs(config)) == [(config.configurations[0], ARCH)]  # the pair listing is unchanged
    size = config.input_size(ARCH)
    prints = {run_fingerprint(config, "c", ARCH, size, s) for s in (0, 1, 2)}
    assert len(prints) == 3


def test_repeated_seeds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="repeats a seed"):
        tiny_study(tmp_path, seeds=[1, 1])


def test_each_seed_trains_into_its_own_folder_with_its_own_weights(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, seeds=[0, 1], max_epochs=1)
    study = Study.of(config)
    folders = [train_run(study, "c", ARCH, datamodule=SquaresDataModule(), seed=s) for s in (0, 1)]
    assert folders == [tmp_path / "runs" / "c" / ARCH / "seed-0", tmp_path / "runs" / "c" / ARCH / "seed-1"]
    assert all((f / "done.json").is_file() and (f / "checkpoints" / "best.ckpt").is_file() for f in folders)
    w0, w1 = (torch.load(f / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"] for f in folders)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if w0[k].is_floating_point())
    again = train_run(study, "c", ARCH, datamodule=SquaresDataModule(), seed=1)  # done: returns at once
    assert again == folders[1]


def test_train_and_predict_refuse_a_seed_the_study_does_not_name(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxrgen.cli import app
    from cxrgen.study.config import dump_resolved

    study_file = tmp_path / "study.yaml"
    study_file.write_text(dump_resolved(tiny_study(tmp_path / "out", seeds=[0, 1])))
    for command in ("train", "predict"):
        arguments = [command, str(study_file), "--configuration", "c", "--arch", ARCH, "--seed", "9"]
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 2, result.output
        assert "--seed 9 is not one of train.seeds [0, 1]" in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "out" / "runs").exists()  # refused before any work
