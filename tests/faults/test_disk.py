"""Issue 14, full disk for real: a tmpfs of a few megabytes, mounted here (root only), fills under the real command.

Each test asserts that the command stopped on the full disk with one ``No space left on device`` line (not a
SIGBUS, not a traceback), that the files it had written stay complete, and that, once the disk is grown, the
same command resumes and finishes.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cxrgen.learn.checkpoints import load_checkpoint
from cxrgen.synthetic import write_synthetic
from helpers.faults import ARCH, check_complete, cxrgen, error_lines, study_yaml

pytestmark = pytest.mark.requires("root", "mount")  # a real tmpfs, mounted and grown here


class Disk:
    """A mounted tmpfs that can be grown (``mount -o remount,size=...``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True, capture_output=True)


def mount_tmpfs(path: Path, size: str) -> Disk:
    path.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
    except FileNotFoundError:
        result = None
    if result is None or result.returncode != 0:
        reason = "no mount command" if result is None else (result.stderr.strip() or f"exit {result.returncode}")
        print(f"skipping: cannot mount a tmpfs at {path} ({reason}); needs root (CAP_SYS_ADMIN)")
        pytest.skip(f"cannot mount a tmpfs ({reason}); a really full disk needs root")
    return Disk(path)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    mounted = mount_tmpfs(tmp_path / "disk", "3m")
    yield mounted
    subprocess.run(["umount", "-l", str(mounted.path)], capture_output=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("disk") / "data"
    write_synthetic(folder, seed=0, scale=0.05, image_size=64)
    return folder


@pytest.mark.slow
def test_cache_on_a_full_disk_fails_with_one_line_then_resumes(data: Path, disk: Disk) -> None:
    out = disk.path / "study"
    # About 70 CheXpert images at 256 px: a 4.3 MB memory-mapped cache on a 3 MB disk.
    (data / "full-cache.yaml").write_text(study_yaml(out=str(out), preprocess={"size": 256, "engine": "opencv"}))
    result = cxrgen("prepare", "full-cache.yaml", "--workers", "1", cwd=data)

    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])  # before the fix: -7, SIGBUS
    lines = error_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("error: No space left on device: cache chexpert-256-opencv.partial in "), lines[0]
    images = int((pd.read_parquet(out / "manifest.parquet")["dataset"] == "chexpert").sum())
    needed = re.search(r"needs ([\d,]+) bytes", lines[0])
    assert needed is not None, lines[0]
    assert 0 < int(needed[1].replace(",", "")) - images * 256 * 256 < 4096  # the pixels and the .npy header
    assert not (out / "cache" / "chexpert-256-opencv" / "meta.json").exists()
    # The stages before the cache are kept; excluded.csv comes after it (the cache build checks what it decodes).
    assert (out / "manifest.parquet").exists() and (out / "splits.parquet").exists()
    check_complete(out)

    disk.resize("64m")
    rerun = cxrgen("prepare", "full-cache.yaml", "--workers", "1", cwd=data)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (out / "cache" / "chexpert-256-opencv" / "meta.json").exists() and (out / "excluded.csv").exists()
    assert not list((out / "cache").glob("*.partial")) and not list((out / "cache").glob(".*.partial.*"))
    check_complete(out)


@pytest.mark.slow
def test_checkpoint_on_a_full_disk_fails_with_one_line_then_resumes(data: Path, disk: Disk) -> None:
    out = disk.path / "study"
    disk.resize("40m")  # room for best.ckpt (weights, 20 MB) but not for last.ckpt (weights and Adam, 59 MB)
    (data / "full-ckpt.yaml").write_text(study_yaml(out=str(out)))
    assert cxrgen("prepare", "full-ckpt.yaml", "--workers", "1", cwd=data).returncode == 0
    train = ("train", "full-ckpt.yaml", "--configuration", "c1", "--arch", ARCH)
    result = cxrgen(*train, cwd=data)

    run = out / "runs" / "c1" / ARCH
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    lines = error_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    expected = f"error: No space left on device: could not write checkpoint {run}/checkpoints/"
    assert lines[0].startswith(expected), lines[0]
    assert not (run / "done.json").exists() and not (run / "checkpoints" / "last.ckpt").exists()
    assert not list(run.glob("checkpoints/.*.tmp"))  # the half-written temporary is gone
    load_checkpoint(run / "checkpoints" / "best.ckpt")
    check_complete(out)

    disk.resize("256m")
    rerun = cxrgen(*train, cwd=data)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (run / "done.json").exists()
    check_complete(out)
