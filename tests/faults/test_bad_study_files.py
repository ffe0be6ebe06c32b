"""Issue 14, study files that contradict themselves or attack the parser: each refused at load time by the real
``cxrgen prepare`` with one ``error:`` line naming the key (or the line), before any cache is built.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from helpers.faults import cxrgen, one_error, study_yaml


def study(tmp_path: Path, name: str = "study.yaml", **overrides: object) -> Path:
    """A study file over three (empty) dataset folders; roots exist so only the contradiction can fail."""
    for folder in ("chexpert", "nih", "mimic"):
        (tmp_path / folder).mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(study_yaml(datasets=("chexpert", "nih", "mimic"), **overrides))
    return path


def configuration(**roles: list[str]) -> list[dict[str, object]]:
    return [{"name": "c1", "train": ["chexpert"], "internal": ["chexpert"], "external": ["mimic"], **roles}]


@pytest.mark.parametrize(
    ("overrides", "patterns"),
    [
        ({"configurations": configuration(external=["mimic", "chexpert"])},
         [r"configurations\[0\] \('c1'\)\.external", "chexpert", "also trains on"]),
        ({"configurations": configuration(internal=["chexpert", "nih"])},
         [r"configurations\[0\] \('c1'\)\.internal", "'nih'", "does not train on"]),
        ({"configurations": configuration(train=[], internal=[])}, [r"configurations\[0\] \('c1'\)\.train: empty"]),
        ({"labels": [], "uncertainty": {}}, [r"labels: empty list"]),
        ({"out": "mimic/runs"}, [r"out: .*mimic/runs is inside datasets\.mimic\.root"]),
    ],
    ids=["external-is-trained", "internal-not-trained", "empty-train", "empty-labels", "out-inside-root"],
)  # fmt: skip
def test_contradictory_study_is_refused_naming_the_keys(
    tmp_path: Path, overrides: dict[str, object], patterns: list[str]
) -> None:
    path = study(tmp_path, **overrides)
    one_error(cxrgen("prepare", path, "--until", "manifest", cwd=tmp_path), re.escape(str(path)), *patterns)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_two_dataset_entries_over_one_root_are_refused(tmp_path: Path) -> None:
    path = study(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["datasets"]["chexpert2"] = {"reader": "chexpert", "root": "./chexpert/", "csv": "train.csv"}
    data["configurations"][0]["external"] = ["mimic", "chexpert2"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    one_error(
        cxrgen("prepare", path, "--until", "manifest", cwd=tmp_path),
        r"datasets\.chexpert\.root and datasets\.chexpert2\.root overlap",
    )
    # A root nested inside another is the same hospital too.
    data["datasets"]["chexpert2"]["root"] = "chexpert/CheXpert-v1.0-small"
    (tmp_path / "chexpert" / "CheXpert-v1.0-small").mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    one_error(cxrgen("prepare", path, "--until", "manifest", cwd=tmp_path), r"chexpert2\.root overlap")


def test_out_that_would_overwrite_the_study_file_is_refused(tmp_path: Path) -> None:
    path = study(tmp_path, name="config.yaml", out=".")
    before = path.read_text()
    one_error(cxrgen("prepare", path, "--until", "manifest", cwd=tmp_path), "would overwrite this study file")
    assert path.read_text() == before


def test_yaml_alias_bomb_is_checked_in_linear_time(tmp_path: Path) -> None:
    """Billion laughs: 9 levels of 9 aliases, 0.5 KB; as a tree 9**9 nodes, as a graph 90."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [" + ",".join([f"*a{level - 1}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 600
    started = time.perf_counter()
    result = cxrgen("prepare", path, "--until", "manifest", cwd=tmp_path, timeout=60)
    assert time.perf_counter() - started < 30
    # Parsed fine; refused for what it is: no study keys.
    one_error(result, re.escape(str(path)), "name: Field required")


def test_yaml_with_a_duplicate_key_behind_an_alias_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("base: &b {x: 1}\nother: [*b, {y: 1, y: 2}]\n")
    one_error(cxrgen("prepare", path, cwd=tmp_path), r"duplicate key 'y' at line 2")


@pytest.mark.parametrize("depth", [100, 5000])
def test_deeply_nested_study_file_is_one_error_line(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * depth + "]" * depth + "\n")
    one_error(cxrgen("prepare", path, cwd=tmp_path), re.escape(str(path)), ": nested (more than 64 levels|too deeply)")
