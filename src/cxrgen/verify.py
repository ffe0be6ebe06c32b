"""The verify stage: decode every image of the manifest once and list the ones that fail in ``excluded.csv``.

Training sets drop excluded images; test sets lose them too, but never silently: :func:`excluded_test_counts`
gives, per test set, how many images it had and how many were excluded, for the caller to print and record.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd

from cxrgen.errors import CxrgenError
from cxrgen.fileio import write_csv
from cxrgen.images import ImageError, decode

log = logging.getLogger(__name__)

EXCLUDED_FILE = "excluded.csv"
EXCLUDED_COLUMNS = ("dataset", "image_id", "path", "reason")
#: Images per task sent to a worker: large enough to amortize the inter-process hop, small enough to balance.
CHUNK = 256


def _check_chunk(items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(image_id, absolute path) pairs -> (image_id, reason) for those that fail to decode."""
    failures = []
    for image_id, path in items:
        try:
            decode(path)
        except ImageError as exc:
            failures.append((image_id, exc.reason))
    return failures


def _chunks(items: Sequence[tuple[str, str]], size: int) -> Iterator[Sequence[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def default_workers() -> int:
    """All cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def verify_manifest(
    manifest: pd.DataFrame,
    roots: Mapping[str, Path],
    study_dir: Path,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Decode every manifest image once, in parallel, and write ``<study_dir>/excluded.csv`` atomically.

    Args:
        manifest: rows with at least ``dataset, image_id, path`` (path relative to its dataset's root).
        roots: dataset name -> dataset root folder.
        study_dir: where ``excluded.csv`` goes.
        workers: processes; None = all cores, 1 = in this process.
        progress: called with (images checked, images in all) after each chunk, for a progress bar.

    Returns:
        The excluded images: ``dataset, image_id, path, reason``, in manifest order (empty when all decode).
    """
    missing = sorted(set(manifest["dataset"].unique()) - set(roots))
    if missing:
        raise CxrgenError(f"verify: no root folder given for dataset(s) {', '.join(missing)}")
    items = [
        (image_id, str(Path(roots[dataset]) / path))
        for dataset, image_id, path in zip(manifest["dataset"], manifest["image_id"], manifest["path"], strict=True)
    ]
    workers = workers or default_workers()
    total, done = len(items), 0
    reasons: dict[str, str] = {}
    chunks = list(_chunks(items, CHUNK))
    with contextlib.ExitStack() as stack:
        if workers == 1 or len(chunks) <= 1:
            results: Iterator[list[tuple[str, str]]] = map(_check_chunk, chunks)
        else:
            # forkserver: workers must not inherit a parent that may hold torch/OpenMP threads. A Pool, because
            # leaving the block (also on SIGTERM or Ctrl-C, see cxrgen.interrupts) terminates its workers at once.
            pool = stack.enter_context(multiprocessing.get_context("forkserver").Pool(workers))
            results = pool.imap(_check_chunk, chunks)
        for chunk, failures in zip(chunks, results, strict=True):
            reasons.update(failures)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    bad = manifest["image_id"].isin(list(reasons))
    excluded = manifest.loc[bad, ["dataset", "image_id", "path"]].reset_index(drop=True)
    excluded["reason"] = excluded["image_id"].map(reasons).astype(str)
    write_csv(excluded, Path(study_dir) / EXCLUDED_FILE)
    if len(excluded):
        log.warning("verify: %d of %d image(s) failed to decode; listed in %s", len(excluded), total, EXCLUDED_FILE)
    return excluded


def read_excluded(study_dir: Path) -> pd.DataFrame:
    """``excluded.csv`` of a study; raises when the verify stage has not run."""
    path = Path(study_dir) / EXCLUDED_FILE
    if not path.is_file():
        raise CxrgenError(f"{path}: missing; run `cxrgen prepare --until verify` first")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in EXCLUDED_COLUMNS if c not in frame.columns]
    if missing:
        raise CxrgenError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def excluded_test_counts(excluded: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, its test split's image count and how many of them were excluded.

    Args:
        excluded: ``excluded.csv`` rows (``image_id`` is enough).
        splits: ``splits.parquet`` rows (``image_id, dataset, split``).

    Returns:
        ``dataset, images, excluded, kept``, one row per dataset that has a test split.
    """
    test = splits.loc[splits["split"] == "test", ["image_id", "dataset"]]
    lost = test["image_id"].isin(set(excluded["image_id"]))
    counts = (
        test.assign(excluded=lost.astype(int))
        .groupby("dataset", sort=True)
        .agg(images=("image_id", "size"), excluded=("excluded", "sum"))
        .reset_index()
    )
    counts["kept"] = counts["images"] - counts["excluded"]
    return counts
