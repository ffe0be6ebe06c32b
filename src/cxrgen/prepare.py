"""The ``prepare`` stages: manifest -> splits -> verify -> cache, each writing its artifact atomically."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from cxrgen.cohort import describe
from cxrgen.config import StudyConfig, dump_resolved
from cxrgen.fileio import write_parquet, write_text
from cxrgen.manifest import build_manifest
from cxrgen.splits import make_splits

Stage = Literal["manifest", "splits", "verify", "cache"]
STAGES: tuple[Stage, ...] = ("manifest", "splits", "verify", "cache")


@dataclass
class Prepared:
    """What ``prepare`` produced, for printing and for the stages after it."""

    manifest: pd.DataFrame
    splits: pd.DataFrame | None = None
    cohort: pd.DataFrame | None = None
    excluded: pd.DataFrame | None = None
    caches: list[Path] = field(default_factory=list)


def frame_digest(frame: pd.DataFrame) -> str:
    """A content hash of a table, stable across runs, to tell whether an artifact changed."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(frame.columns).encode()).hexdigest()


def write_if_changed(frame: pd.DataFrame, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Keep an identical artifact untouched, so files that depend on its mtime stay valid."""
    digest = frame_digest(frame)
    if path.exists():
        from cxrgen.fileio import parquet_metadata

        if parquet_metadata(path).get("cxrgen_digest") == digest:
            return
    write_parquet(frame, path, {**(metadata or {}), "cxrgen_digest": digest})


def run_prepare(
    config: StudyConfig,
    *,
    until: Stage = "cache",
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
) -> Prepared:
    """Run the preparation stages up to and including ``until``.

    The manifest and splits need only the metadata files; they are recomputed (seconds) and rewritten only when
    their content changed. Verify and cache read every image once and skip work already done.
    """
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_resolved(config))
    manifest = build_manifest(config)
    write_if_changed(manifest, out / "manifest.parquet")
    prepared = Prepared(manifest=manifest)
    if STAGES.index(until) < STAGES.index("splits"):
        prepared.cohort = describe(manifest, None, list(config.labels))
        return prepared
    splits, metadata = make_splits(manifest, config)
    write_if_changed(splits, out / "splits.parquet", metadata)
    prepared.splits = splits
    prepared.cohort = describe(manifest, splits, list(config.labels))
    return prepared
