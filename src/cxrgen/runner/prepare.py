"""The ``prepare`` stages: manifest -> splits -> verify -> cache, each writing its artifact atomically."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cxrgen.data.checks import check_test_sets
from cxrgen.data.cohort import describe
from cxrgen.data.manifest import build_manifest_with_notes
from cxrgen.data.splits import make_splits
from cxrgen.runner.stages import STAGES, Stage
from cxrgen.study.config import StudyConfig, dump_resolved
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import parquet_metadata, write_csv, write_parquet, write_text

if TYPE_CHECKING:
    from cxrgen.data.verify import Verified

#: Called with (task, done, total) as verify and cache make progress.
Progress = Callable[[str, int, int], None]


@dataclass
class Prepared:
    """What ``prepare`` produced, for printing and for the stages after it."""

    manifest: pd.DataFrame
    splits: pd.DataFrame | None = None
    cohort: pd.DataFrame | None = None
    excluded: pd.DataFrame | None = None
    excluded_tests: pd.DataFrame | None = None
    caches: list[Path] = field(default_factory=list)


def frame_digest(frame: pd.DataFrame) -> str:
    """A content hash of a table, stable across runs, to tell whether an artifact changed."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(frame.columns).encode()).hexdigest()


def write_if_changed(frame: pd.DataFrame, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Keep an identical artifact untouched, so files that depend on its mtime stay valid."""
    digest = frame_digest(frame)
    if path.exists() and parquet_metadata(path).get("cxrgen_digest") == digest:
        return
    write_parquet(frame, path, {**(metadata or {}), "cxrgen_digest": digest})


def run_verify(
    study: Study,
    manifest: pd.DataFrame,
    workers: int | None,
    progress: Progress | None,
    verified: Verified | None = None,
) -> pd.DataFrame:
    """Decode every image once (but those in ``verified``, checked by the cache build that decoded them); skipped
    when ``excluded.csv`` was made from the same rows and image files.

    The files enter by size and modification time, so a replaced (repaired) image is checked again.
    """
    from cxrgen.data.cache import fingerprint
    from cxrgen.data.verify import read_excluded, verify_manifest

    config, layout = study.config, study.dir
    stamp = layout.verify_stamp
    files = [
        fingerprint(rows["image_id"].tolist(), rows["path"].tolist(), config.datasets[str(name)].root, {})
        for name, rows in manifest.groupby("dataset", sort=True)
    ]
    limits = json.dumps(config.verify.model_dump(), sort_keys=True)
    digest = hashlib.sha256("".join([frame_digest(manifest), *files, limits]).encode()).hexdigest()
    done = layout.excluded.exists() and stamp.exists()
    if done and json.loads(stamp.read_text()).get("manifest_digest") == digest:
        return read_excluded(layout.path)
    roots = {name: ds.root for name, ds in config.datasets.items()}
    report = (lambda done, total: progress("verify", done, total)) if progress else None
    excluded = verify_manifest(
        manifest, roots, layout.path, workers=workers, progress=report, max_pixels=config.verify.max_pixels,
        verified=verified,
    )  # fmt: skip
    write_text(stamp, json.dumps({"manifest_digest": digest, "excluded": len(excluded)}))
    return excluded


def cache_sizes(config: StudyConfig, arch_sizes: Mapping[str, int]) -> list[int]:
    """The distinct input sizes the study needs: ``preprocess.size`` or those of its architectures."""
    from cxrgen.data.cache import CacheError

    external = {spec.size for arch in config.architectures if (spec := config.external_model(arch))}
    if config.preprocess.size is not None:
        return sorted({config.preprocess.size, *external})  # a model from elsewhere keeps its own input size
    unknown = [arch for arch in config.architectures if arch not in arch_sizes]
    if unknown:
        raise CacheError(f"no input size known for architecture(s) {', '.join(unknown)}")
    return sorted({arch_sizes[arch] for arch in config.architectures})


def ensure_caches(
    study: Study,
    manifest: pd.DataFrame,
    arch_sizes: Mapping[str, int],
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: Progress | None = None,
    verified: Verified | None = None,
) -> dict[tuple[str, int], Path]:
    """Build every cache the study needs: each dataset used by a configuration x each input size.

    This is the study's side of the cache (which datasets, sizes, engine); :func:`cxrgen.data.cache.build_cache`
    builds one cache from rows and a root and knows nothing of study files.

    Args:
        study: the study; the caches go to its ``cache/`` folder.
        manifest: ``manifest.parquet`` rows.
        arch_sizes: architecture name -> input size (from the model registry; ignored when
            ``preprocess.size`` is set).
        workers: processes per cache; None = all cores.
        shard: ``(k, n)``: this job's share of every cache (see :func:`cxrgen.data.cache.build_cache`).
        progress: called with (cache key, images done, images in all).
        verified: collects verify's checks of the images the builds decode (see :class:`cxrgen.data.verify.Verified`).

    Returns:
        (dataset, size) -> cache folder (a ``.partial`` folder while other shards still work on it).
    """
    from cxrgen.data.cache import CacheError, build_cache, cache_key

    config = study.config
    engine, clahe = config.preprocess.engine, config.preprocess.clahe
    folders: dict[tuple[str, int], Path] = {}
    for dataset in config.used_datasets():
        rows = manifest.loc[manifest["dataset"] == dataset]
        if rows.empty:
            raise CacheError(f"dataset {dataset!r} has no rows in the manifest")
        for size in cache_sizes(config, arch_sizes):
            key = cache_key(dataset, size, engine, clahe)
            report = (lambda done, total, key=key: progress(key, done, total)) if progress else None
            folders[(dataset, size)] = build_cache(
                rows, config.datasets[dataset].root, study.dir.path, dataset, size, engine, clahe, workers, shard,
                report, device=config.preprocess.device, verified=verified,
            )  # fmt: skip
    return folders


def run_cache(
    study: Study,
    manifest: pd.DataFrame,
    workers: int | None,
    shard: tuple[int, int] | None,
    progress: Progress | None,
    verified: Verified | None = None,
) -> list[Path]:
    """Build the preprocessed caches every architecture of the study needs (at its input size)."""
    config = study.config
    sizes = {arch: config.input_size(arch) for arch in config.architectures}
    report = (lambda key, done, total: progress(f"cache {key}", done, total)) if progress else None
    folders = ensure_caches(study, manifest, sizes, workers=workers, shard=shard, progress=report, verified=verified)
    return list(folders.values())


def run_prepare(
    study: Study,
    *,
    until: Stage = "cache",
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> Prepared:
    """Run the preparation stages up to and including ``until``.

    The manifest and splits need only the metadata files; they are recomputed (seconds) and rewritten only when
    their content changed. Verify and cache skip work already done; together they decode each image once: up to
    the cache, the cache builds come first and check the images they decode, and verify decodes only the rest
    (images of datasets no configuration uses, chunks another shard or an earlier run built, engine ``torch``).
    """
    config, layout = study.config, study.dir
    layout.path.mkdir(parents=True, exist_ok=True)
    write_text(layout.config, dump_resolved(config))
    manifest, notes = build_manifest_with_notes(config)
    write_if_changed(manifest, layout.manifest)
    write_csv(notes, layout.reading_notes)
    prepared = Prepared(manifest=manifest)
    if STAGES.index(until) < STAGES.index("splits"):
        prepared.cohort = describe(manifest, None, list(config.labels), notes)
        return prepared
    splits, metadata = make_splits(manifest, config)
    check_test_sets(config, splits)
    write_if_changed(splits, layout.splits, metadata)
    prepared.splits = splits
    prepared.cohort = describe(manifest, splits, list(config.labels), notes)
    if STAGES.index(until) < STAGES.index("verify"):
        return prepared
    from cxrgen.data.verify import Verified, excluded_test_counts

    verified = None
    if until == "cache" and config.preprocess.engine != "torch":
        verified = Verified(config.verify.max_pixels)
        prepared.caches = run_cache(study, manifest, workers, shard, progress, verified)
    prepared.excluded = run_verify(study, manifest, workers, progress, verified)
    prepared.excluded_tests = excluded_test_counts(prepared.excluded, splits)
    check_test_sets(config, splits, prepared.excluded)
    if until == "cache" and verified is None:
        prepared.caches = run_cache(study, manifest, workers, shard, progress)
    return prepared
