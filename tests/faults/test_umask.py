"""Issue 14, modes: files and folders the real ``cxrgen prepare`` writes get the modes the umask asks for.

Atomic writes go through ``mkstemp`` (mode 0600) and cache folders through ``mkdtemp`` (0700); before the fix a
colleague, a second account running ``--shard 2/2`` or a web server could read none of them.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cxrgen.synthetic import write_synthetic
from helpers.faults import ENV, study_yaml


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("umask") / "data"
    write_synthetic(folder, seed=0, scale=0.05, image_size=64)
    return folder


def modes(root: Path) -> dict[str, set[int]]:
    """Permission bits of every file and folder below ``root``, by kind."""
    found: dict[str, set[int]] = {"file": set(), "dir": set()}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found["dir"].add(stat.S_IMODE((Path(folder) / name).stat().st_mode))
        for name in files:
            found["file"].add(stat.S_IMODE((Path(folder) / name).stat().st_mode))
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)], ids=["022", "027"]
)
def test_prepare_writes_files_and_cache_folders_under_the_umask(
    data: Path, umask: int, file_mode: int, dir_mode: int
) -> None:
    name = f"umask{umask:03o}"
    (data / f"{name}.yaml").write_text(study_yaml(out=f"runs/{name}"))
    result = subprocess.run(
        ["sh", "-c", f'umask {umask:03o} && exec "$0" -m cxrgen prepare {name}.yaml --workers 1', sys.executable],
        cwd=data, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = data / "runs" / name
    assert (out / "cache" / "chexpert-32-opencv" / "images.npy").exists()
    found = modes(out)
    assert found["file"] == {file_mode}, {oct(m) for m in found["file"]}  # before the fix: 0o600 for most
    assert found["dir"] == {dir_mode}, {oct(m) for m in found["dir"]}  # before the fix: 0o700 for cache folders
