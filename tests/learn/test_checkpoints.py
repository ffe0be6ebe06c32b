"""Checkpoint files: atomic writes, weights_only reads, refusal of pickled objects and damaged files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from cxrgen.learn.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from helpers.faults import WritesAFile


def _state() -> dict[str, Any]:
    return {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "meta": {"labels": ["A", "B"]}}


def test_roundtrip_keeps_tensors_and_plain_values(tmp_path: Path) -> None:
    save_checkpoint(_state(), tmp_path / "c.ckpt")
    loaded = load_checkpoint(tmp_path / "c.ckpt")
    assert torch.equal(loaded["state_dict"]["w"], _state()["state_dict"]["w"])
    assert loaded["epoch"] == 3 and loaded["meta"] == {"labels": ["A", "B"]}
    assert os.listdir(tmp_path) == ["c.ckpt"]  # no temporary file left behind



def test_checkpoint_with_pickled_object_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": WritesAFile(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt.*pickled objects"):
        load_checkpoint(path)
    assert not marker.exists()


def test_saving_a_non_plain_object_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint\['where'\] is a pathlib"):
        save_checkpoint({"where": tmp_path}, tmp_path / "c.ckpt")
    assert os.listdir(tmp_path) == []


def test_truncated_checkpoint_gives_a_clear_error(tmp_path: Path) -> None:
    save_checkpoint(_state(), tmp_path / "c.ckpt")
    data = (tmp_path / "c.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt is truncated or damaged"):
        load_checkpoint(tmp_path / "cut.ckpt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    save_checkpoint(_state(), path)
    before = path.read_bytes()

    def dies_halfway(obj: object, f: Any) -> None:
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # as a kill in the middle of torch.save would

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({**_state(), "epoch": 4}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert load_checkpoint(path)["epoch"] == 3


def test_missing_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nothere\.ckpt does not exist"):
        load_checkpoint(tmp_path / "nothere.ckpt")


def test_a_study_folder_removed_before_a_run_writes_is_named_and_not_recreated(tmp_path: Path) -> None:
    """Issue 27: a study folder removed while a run trains stops the run's next write by name, not recreated."""
    import shutil
    from types import SimpleNamespace

    from cxrgen.learn.module import append_epoch_row
    from cxrgen.learn.train import RunCheckpoints
    from cxrgen.study.layout import StudyDir, StudyFolderGone

    study = tmp_path / "runs" / "paper"  # a study folder that itself lies under a folder named runs
    run = StudyDir(study).run("c1", "resnet10t")
    save_checkpoint(_state(), run.last_checkpoint)
    append_epoch_row(run.metrics, {"epoch": 0, "val_loss": 1.0})
    shutil.rmtree(study)
    gone = f"the study folder {study} no longer exists"
    with pytest.raises(StudyFolderGone, match=gone):
        append_epoch_row(run.metrics, {"epoch": 1, "val_loss": 0.5})
    trainer: Any = SimpleNamespace(sanity_checking=False)  # the check comes before anything is asked of it
    with pytest.raises(StudyFolderGone, match=gone):
        RunCheckpoints(run).on_validation_end(trainer, None)  # type: ignore[arg-type]
    assert not study.exists()  # neither write recreated it


def test_a_study_folder_removed_during_a_checkpoint_write_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder goes while ``torch.save`` writes the temporary file: the real write fails, and says why."""
    import shutil

    from cxrgen.study.layout import StudyDir

    study = tmp_path / "study"
    run = StudyDir(study).run("c1", "resnet10t", seed=0)
    save_checkpoint(_state(), run.last_checkpoint)
    real_save = torch.save

    def remove_then_save(obj: object, f: Any) -> None:
        shutil.rmtree(study)
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", remove_then_save)
    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(_state(), run.last_checkpoint)
    message = str(caught.value)
    assert message == (
        f"the study folder {study} no longer exists (removed or moved while the run was writing): could not write "
        f"checkpoint {run.last_checkpoint}"
    ), message
