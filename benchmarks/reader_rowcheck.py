"""The readers' per-row path check on the real NIH metadata: vectorized (pandas string ops) against a ``Path``
per row (the previous implementation, kept here as the baseline), and the whole NIH reader around it; the
same check on 223,414 paths in CheXpert's layout (its table is not redistributable).

Needs ``../shared/realdata/nih/metadata`` (112,120 rows); skips with a message when it is absent.
Run: ``.venv/bin/python benchmarks/reader_rowcheck.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pandas as pd

from cxrgen.sources import nih
from cxrgen.sources.common import SourceError, check_relative_paths

METADATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "nih" / "metadata"
LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def per_row_check(paths: pd.Series, source: Path) -> None:
    """The baseline: one PurePosixPath per row (what ``check_relative_paths`` did before)."""
    for position, value in enumerate(paths.to_numpy()):
        text = str(value)
        pure = PurePosixPath(text.replace("\\", "/"))
        if pure.is_absolute() or (len(text) > 1 and text[1] == ":") or ".." in pure.parts or not text:
            raise SourceError(f"{source}: row {position + 2}: path {text!r} is absolute or leaves the dataset root")


def best_of(repeats: int, func: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (METADATA / "Data_Entry_2017_v2020.csv.gz").is_file():
        print(f"skipped: {METADATA} is absent")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("Data_Entry_2017_v2020.csv.gz", "train_val_list.txt", "test_list.txt"):
            (root / name).symlink_to(METADATA / name)
        source = root / "Data_Entry_2017_v2020.csv.gz"
        frame = pd.read_csv(source, usecols=[0], dtype=str)
        paths = "images/" + frame.iloc[:, 0].str.strip()
        baseline = best_of(args.repeats, lambda: per_row_check(paths, source))
        vectorized = best_of(args.repeats, lambda: check_relative_paths(paths, source))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the 16 ages above 120 years, expected here
            reader = best_of(args.repeats, lambda: nih.read(root, name="nih", labels=LABELS))
            nih.check_relative_paths = per_row_check  # the reader as it was, for the same-run ratio
            reader_before = best_of(args.repeats, lambda: nih.read(root, name="nih", labels=LABELS))
            nih.check_relative_paths = check_relative_paths
    # CheXpert's train.csv is not redistributable: its 223,414 paths, in its layout, stand in for it.
    chexpert = pd.Series([f"train/patient{k // 4:05d}/study{k % 4 + 1}/view1_frontal.jpg" for k in range(223_414)])
    chex_baseline = best_of(args.repeats, lambda: per_row_check(chexpert, source))
    chex_vectorized = best_of(args.repeats, lambda: check_relative_paths(chexpert, source))
    print(f"CheXpert-layout paths: {len(chexpert):,}")
    print(f"path check, Path per row (baseline): {chex_baseline:.3f} s")
    ratio = chex_baseline / chex_vectorized
    print(f"path check, vectorized:              {chex_vectorized:.3f} s  ({ratio:.1f}x faster)")
    print(f"NIH rows: {len(paths):,}")
    print(f"path check, Path per row (baseline): {baseline:.3f} s")
    print(f"path check, vectorized:              {vectorized:.3f} s  ({baseline / vectorized:.1f}x faster)")
    print(f"whole NIH reader, Path per row:      {reader_before:.3f} s")
    print(f"whole NIH reader, vectorized:        {reader:.3f} s  ({reader_before / reader:.2f}x faster)")


if __name__ == "__main__":
    main()
