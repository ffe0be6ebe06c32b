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
