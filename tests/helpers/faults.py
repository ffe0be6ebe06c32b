"""Helpers of the fault tests (issue 8): run the real ``cxrgen`` command, kill it at a chosen moment, write a
tiny study, and check that every file a study directory shows under its final name is complete.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
ARCH = "resnet10t"  # a tiny timm model; its input size comes from preprocess.size
#: Single-threaded native libraries in the children: two cores are shared with other jobs.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def study_yaml(
    out: str = "runs/tiny", datasets: tuple[str, ...] = ("chexpert", "mimic"), **overrides: object
) -> str:
    """A tiny study over the synthetic hospitals: one configuration, one tiny architecture, 32 px, 2 epochs."""
    roots = {
        "chexpert": {"reader": "chexpert", "root": "chexpert", "csv": "train.csv"},
        "nih": {"reader": "nih", "root": "nih"},
        "mimic": {"reader": "mimic", "root": "mimic", "labels": "chexpert"},
    }
    splits = {
        "chexpert": {"method": "random", "seed": 0},
        "nih": {"method": "random", "seed": 0},
        "mimic": {"method": "official"},
    }
    trained = [d for d in datasets if d != "mimic"]
    study: dict[str, object] = {
        "name": "tiny",
        "out": out,
        "datasets": {d: roots[d] for d in datasets},
        "labels": LABELS,
        "uncertainty": {"Atelectasis": "ones", "Cardiomegaly": "zeros", "Consolidation": "zeros", "Edema": "ones",
                        "Pleural Effusion": "ones"},
        "splits": {d: splits[d] for d in datasets},
        "preprocess": {"size": 32, "engine": "opencv"},
        "architectures": [ARCH],
        "train": {"pretrained": False, "max_epochs": 2, "batch_size": 16, "num_workers": 0, "accelerator": "cpu",
                  "devices": 1},
        "evaluation": {"bootstrap": 20},
        "configurations": [
            {"name": "c1", "train": trained, "internal": trained, "external": ["mimic"] if "mimic" in datasets else []}
        ],
    }  # fmt: skip
    study.update(overrides)
    return yaml.safe_dump(study, sort_keys=False)


def cxrgen(*args: str | Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cxrgen ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "cxrgen", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV,
    )  # fmt: skip


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def start(*args: str | Path, cwd: Path, code: str | None = None) -> subprocess.Popen[str]:
    """Start ``python -m cxrgen ARGS`` (or ``python -c CODE ARGS``) in the background."""
    head = ["-c", code] if code is not None else ["-m", "cxrgen"]
    return subprocess.Popen(
        [sys.executable, *head, *map(str, args)], cwd=cwd, env=ENV, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 120) -> bool:
    """Poll ``ready`` every 5 ms while ``proc`` runs; False when it exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{proc.args}: the awaited moment never came")
        time.sleep(0.005)
    return True


def kill_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], delay: float = 0.0, timeout: float = 120
) -> bool:
    """Poll ``ready`` every 5 ms; once true wait ``delay`` seconds and SIGKILL ``proc``.

    Returns:
        True when the process was killed while running; False when it had already exited (the caller decides
        whether that is acceptable: a stage too fast to catch).
    """
    if not wait_for(proc, ready, timeout):
        return False
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    status = proc.wait(30)
    if status == 0:  # it exited normally between the poll and the signal: as if it had already exited
        return False
    assert status == -signal.SIGKILL, status
    return True


def changed(path: Path) -> Callable[[], bool]:
    """A predicate: ``path`` now exists as another file than it was (new inode or mtime)."""

    def stamp() -> tuple[int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    before = stamp()
    return lambda: stamp() not in (None, before)


# ---------------------------------------------------------------------------------------------- completeness


def _check_file(path: Path) -> None:
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".csv.gz") else path.suffix
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.read_table(path)
    elif suffix == ".csv":
        if path.stat().st_size:
            pd.read_csv(path)
    elif suffix == ".csv.gz":
        with gzip.open(path, "rb") as handle:
            handle.read()
    elif suffix == ".npy":
        array = np.load(path, mmap_mode="r")
        header = path.stat().st_size - array.nbytes
        assert 0 < header < 4096, f"{path}: {path.stat().st_size} bytes for {array.shape}"
        np.asarray(array[-1:]).sum()
    elif suffix == ".json":
        json.loads(path.read_text())
    elif suffix == ".jsonl":
        for line in path.read_text().splitlines():
            if line:
                json.loads(line)
    elif suffix == ".yaml":
        assert isinstance(yaml.safe_load(path.read_text()), dict)
    elif suffix in (".png", ".jpg"):
        with Image.open(path) as image:
            image.load()
    elif suffix == ".ckpt":
        from cxrgen.learn.checkpoints import load_checkpoint

        load_checkpoint(path)
    elif suffix in (".md", ".tex", ".txt"):
        assert path.read_text(encoding="utf-8").strip()
    elif suffix == ".html":
        assert path.read_text(encoding="utf-8").rstrip().endswith("</html>")


def check_complete(root: Path) -> int:
    """Open every file under its final name below ``root`` by its type; temporary names are skipped.

    Skipped: dot-files (``.<name>.<random>.tmp``, ``.<name>.partial``, the lock) and ``*.partial`` folders (a
    cache build in progress, published by renaming the whole folder). Returns the number of files checked.
    """
    checked = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not d.endswith(".partial")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                _check_file(path)
            except Exception as exc:
                raise AssertionError(f"{path} is visible under its final name but incomplete: {exc!r}") from exc
            checked += 1
    return checked


def leftovers(root: Path) -> list[str]:
    """Temporary files a SIGKILL left behind (they never carry a final name)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.name != ".cxrgen.utils.lock")


# ---------------------------------------------------------------------------------------------- bad images


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def png_16bit(path: Path) -> None:
    values = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(values).save(path, format="PNG")


def png_palette(path: Path) -> None:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    paletted = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    assert paletted.mode == "P"
    paletted.save(path, format="PNG")


def png_bomb(path: Path, side: int = 20_000) -> None:
    """A small PNG that declares side x side pixels (400 M: over twice Pillow's MAX_IMAGE_PIXELS)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # 1-bit grayscale
    row = b"\0" + b"\0" * ((side + 7) // 8)
    idat = zlib.compress(row * 64, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


class WritesAFile:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for the code a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (str(self.marker), "w"))


def one_error(result: subprocess.CompletedProcess[str], *patterns: str) -> str:
    """Exit code 1, no traceback and exactly one ``error:`` line matching every pattern; returns the line."""
    lines = error_lines(result)
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])
    return lines[0]
