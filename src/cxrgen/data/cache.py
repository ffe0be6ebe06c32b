"""Preprocess each (dataset, size, engine, CLAHE) once into a uint8 memory-mapped array.

A cache is a folder ``<study_dir>/cache/<key>/`` (key ``<dataset>-<size>-<engine>[-noclahe]``) holding

* ``images.npy``: uint8 [N, size, size], rows in ``image_id`` order; an image that fails to decode is all zeros;
* ``index.parquet``: ``row, image_id, path, ok, reason`` (``ok`` False for the zero rows, with the reason);
* ``meta.json``: parameters, fingerprint, dataset, size, engine, count, library versions; for engine ``torch``
  also its ``device`` and ``cpu_fallback``, the images that went through the CPU ``exact`` engine instead;
* ``progress-<k>of<n>.jsonl``: which chunks each process finished (an audit trail of the build).

The fingerprint hashes the sorted (image_id, path, file size, mtime_ns) list, the parameters and
:data:`cxrgen.images.preprocess.PREPROCESS_VERSION`; a cache with another fingerprint is rebuilt.

The build is resumable and shardable: it happens in ``<key>.partial/``, chunk by chunk; a chunk's pixels are
written into the memmap and flushed before its id is appended (and fsynced) to the progress file, so a killed
build, rerun, skips finished chunks and ends byte-identical to an uninterrupted one. ``shard=(k, n)`` takes the
chunks with ``chunk_id % n == k - 1``; whoever finds every chunk done writes the index and renames the folder
to its final name, the one atomic step that publishes a cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pandas as pd

from cxrgen.data.verify import Verified, default_workers, degenerate_reason, outside_root, precheck, stated_bits_list
from cxrgen.errors import CxrgenError
from cxrgen.images.preprocess import (
    ENGINES,
    NUMBA_ENGINES,
    PREPROCESS_VERSION,
    Engine,
    ImageError,
    compile_ahead,
    decode_pixels,
    preprocess_pixels,
)
from cxrgen.study.layout import StudyDir
from cxrgen.utils.fileio import make_temporary_dir, publish_dir, write_parquet, write_text
from cxrgen.utils.heap import reused_heap
from cxrgen.utils.lock import LOCK_NAME
from cxrgen.utils.threads import pin_one_thread, worker_pool

log = logging.getLogger(__name__)

#: Images per chunk: the unit of work, of resume and of sharding (~13 MB of uint8 at 224).
CHUNK = 256
IMAGES = "images.npy"
INDEX = "index.parquet"
META = "meta.json"
PARTIAL_SUFFIX = ".partial"

Progress = Callable[[int, int], None]


class CacheError(CxrgenError, RuntimeError):
    """A cache that cannot be built or used; the message names the folder."""


def cache_key(dataset: str, size: int, engine: str, clahe: bool) -> str:
    """The readable folder name of a cache, e.g. ``nih-224-skimage`` or ``nih-224-opencv-noclahe``."""
    return f"{dataset}-{size}-{engine}" + ("" if clahe else "-noclahe")


def cache_dir(study_dir: Path, dataset: str, size: int, engine: str, clahe: bool) -> Path:
    return StudyDir(Path(study_dir)).caches / cache_key(dataset, size, engine, clahe)


def parameters(dataset: str, size: int, engine: str, clahe: bool, device: str = "cpu") -> dict[str, Any]:
    """Everything besides the files that decides the pixels; the device only for ``torch`` (nvJPEG and CUDA
    kernels may land a level apart from the CPU), so the other engines' fingerprints stay as they were."""
    params = {"dataset": dataset, "size": size, "engine": engine, "clahe": clahe, "version": PREPROCESS_VERSION}
    return {**params, "device": device} if engine == "torch" else params


def fingerprint(
    image_ids: Sequence[str],
    paths: Sequence[str],
    root: Path,
    params: Mapping[str, Any],
    bits: Sequence[int | None] | None = None,
) -> str:
    """SHA-256 of the sorted (image_id, path, file size, mtime_ns[, stated bit depth]) list and the parameters.

    A missing file enters as size -1 so that it appearing later changes the fingerprint. A stated bit depth
    (``bits``, None where unknown) enters only where stated, so caches of datasets that state none keep theirs.
    """
    digest = hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode())
    depths = [None] * len(image_ids) if bits is None else list(bits)
    for image_id, path, depth in sorted(zip(image_ids, paths, depths, strict=True), key=lambda row: row[:2]):
        try:
            stat = (root / path).stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        stated = "" if depth is None else f"\0bits={depth}"
        digest.update(f"{image_id}\0{path}\0{size}\0{mtime}{stated}\n".encode())
    return digest.hexdigest()


def read_meta(folder: Path) -> dict[str, Any] | None:
    """A cache folder's ``meta.json``, or None when absent or unreadable (a folder being created)."""
    try:
        return dict(json.loads((folder / META).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


class Check(NamedTuple):
    """What a chunk needs to do verify's checks on the images it decodes anyway (see :class:`Verified`)."""

    max_pixels: int
    real_root: str


class ChunkResult(NamedTuple):
    """One finished chunk: its failed (row, reason) pairs, the images of a ``torch`` chunk that went through the CPU
    engine, and with a :class:`Check` the rows verify must exclude (row, reason) and how many resolve outside
    the root."""

    chunk_id: int
    failures: list[tuple[int, str]]
    fallback: int
    excluded: list[tuple[int, str]] | None = None
    outside: int = 0


def _chunk_worker(
    images_path: str,
    chunk_id: int,
    start: int,
    paths: Sequence[str],
    size: int,
    engine: Engine,
    clahe: bool,
    device: str = "cpu",
    bits: Sequence[int | None] = (),
    check: Check | None = None,
) -> ChunkResult:
    """Preprocess one chunk into rows ``start ...`` of the memmap and flush it (``bits``: the bit depth the dataset
    states per image, None where unknown; empty: none stated); with ``check``, also verify each image from the
    same decode (an engine other than ``torch``, whose batches never decode on the CPU).
    """
    images = np.load(images_path, mmap_mode="r+")
    failures: list[tuple[int, str]] = []
    excluded: list[tuple[int, str]] = []
    todo: Sequence[int] = range(len(paths))
    if engine == "torch":
        from cxrgen.images.gpu import preprocess_paths  # torch loads only where this engine runs

        batched, todo = preprocess_paths(paths, size, device, clahe)
        for offset, image in batched.items():
            images[start + offset] = image
    with reused_heap():  # each image's arrays reuse the last one's pages
        for offset in todo:
            row, path = start + offset, paths[offset]
            early = precheck(path, check.max_pixels) if check is not None else None
            try:
                # uint8 for 8-bit gray images; PNGs inflated by a numba kernel where the engine loads numba anyway
                inflate = engine in NUMBA_ENGINES and clahe
                gray = decode_pixels(path, bits[offset] if bits else None, inflate=inflate)
            except ImageError as exc:
                images[row] = 0
                failures.append((row, exc.reason))
                verdict: str | None = early or exc.reason
            else:
                images[row] = preprocess_pixels(gray, size, engine, clahe)
                verdict = early or (degenerate_reason(gray) if check is not None else None)
            if check is not None and verdict is not None:
                excluded.append((row, verdict))
    images.flush()
    del images
    if check is None:
        return ChunkResult(chunk_id, failures, len(todo) if engine == "torch" else 0)
    outside = sum(outside_root(path, check.real_root) for path in paths)
    return ChunkResult(chunk_id, failures, 0, excluded, outside)


def _single_thread_opencv() -> None:
    # One process per core already; OpenCV's, numba's and BLAS's own thread pools would oversubscribe them.
    pin_one_thread()


def _progress_name(shard: tuple[int, int] | None) -> str:
    k, n = shard or (1, 1)
    return f"progress-{k}of{n}.jsonl"


def _progress_records(folder: Path) -> dict[int, dict[str, Any]]:
    """Finished chunk id -> its last progress record, over every shard's progress file."""
    records: dict[int, dict[str, Any]] = {}
    for file in sorted(folder.glob("progress-*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill: its chunk is simply redone
            records[int(record["chunk"])] = record
    return records


def _read_progress(folder: Path) -> dict[int, list[tuple[int, str]]]:
    """Finished chunk id -> its failed (row, reason) pairs, over every shard's progress file."""
    return {
        chunk: [(int(row), str(reason)) for row, reason in record["failed"]]
        for chunk, record in _progress_records(folder).items()
    }


class _ProgressLog:
    """Append-only chunk log: one JSON line per finished chunk, fsynced before the next chunk counts."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        if os.fstat(self._fd).st_size and not path.read_bytes().endswith(b"\n"):
            os.write(self._fd, b"\n")  # terminate a line cut by a kill, so the next record stands alone

    def record(self, chunk_id: int, failures: list[tuple[int, str]], fallback: int = 0) -> None:
        fields = {"chunk": chunk_id, "failed": failures, "fallback": fallback, "pid": os.getpid(), "time": time.time()}
        line = json.dumps(fields)
        os.write(self._fd, (line + "\n").encode())  # one write: appends from several processes do not interleave
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _create_partial(partial: Path, rows: pd.DataFrame, meta: dict[str, Any], size: int) -> None:
    """Lay out an empty partial folder under a temporary name and rename it into place (first one wins)."""
    tmp = make_temporary_dir(partial.parent, prefix=f".{partial.name}.")
    try:
        array = np.lib.format.open_memmap(tmp / IMAGES, mode="w+", dtype=np.uint8, shape=(len(rows), size, size))
        array.flush()
        del array
        _preallocate(tmp / IMAGES, partial)
        write_parquet(rows.assign(row=np.arange(len(rows)))[["row", "image_id", "path"]], tmp / INDEX)
        write_text(tmp / META, json.dumps(meta, indent=2, sort_keys=True))
        with contextlib.suppress(OSError):  # another shard created it first: use theirs
            os.rename(tmp, partial)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _preallocate(path: Path, partial: Path) -> None:
    """Reserve every block of a new memory-mapped file now, so a full disk is an error here, not a SIGBUS later.

    ``open_memmap`` makes a sparse file; a worker writing a page the filesystem cannot supply gets SIGBUS and dies
    without a word (exit 135). ``posix_fallocate`` either reserves the blocks or fails with ENOSPC.
    """
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(path.parent).free
        raise CacheError(
            f"No space left on device: cache {partial.name} in {partial.parent} needs {size:,} bytes, "
            f"{free:,} are free; free space (or move the study's out:) and rerun"
        ) from None
    finally:
        os.close(fd)


def _open_partial(partial: Path, rows: pd.DataFrame, meta: dict[str, Any], size: int) -> dict[str, Any]:
    """The partial folder's meta, after removing one left by other inputs and creating it when absent."""
    existing = read_meta(partial)
    if partial.exists() and (existing is None or existing["fingerprint"] != meta["fingerprint"]):
        log.info("cache %s: removing a partial build of other inputs", partial.name)
        shutil.rmtree(partial, ignore_errors=True)
        existing = None
    if existing is None:
        _create_partial(partial, rows, meta, size)
        existing = read_meta(partial)
    if existing is None:
        raise CacheError(f"{partial}: could not create the partial cache folder")
    return existing


def _finalize(partial: Path, final: Path, meta: dict[str, Any], done: dict[int, list[tuple[int, str]]]) -> Path:
    """Write the index with ok flags and the final meta, then publish the folder by one rename."""
    index = pd.read_parquet(partial / INDEX)
    failures = dict(pair for pairs in done.values() for pair in pairs)
    index["ok"] = ~index["row"].isin(list(failures))
    index["reason"] = [failures.get(int(row), "") for row in index["row"]]
    write_parquet(index, partial / INDEX)
    with open(partial / IMAGES, "rb") as handle:
        os.fsync(handle.fileno())
    final_meta = {**meta, "complete": True, "failed": len(failures)}
    if meta["engine"] == "torch":
        final_meta["cpu_fallback"] = sum(int(r.get("fallback", 0)) for r in _progress_records(partial).values())
    write_text(partial / META, json.dumps(final_meta, indent=2, sort_keys=True))
    publish_dir(partial, final, lambda folder: (read_meta(folder) or {}).get("fingerprint") == meta["fingerprint"])
    if failures:
        log.warning("cache %s: %d image(s) failed to decode and are zero rows (ok=False)", final.name, len(failures))
    return final


def build_cache(
    rows: pd.DataFrame,
    root: Path,
    study_dir: Path,
    dataset: str,
    size: int,
    engine: Engine,
    clahe: bool,
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: Progress | None = None,
    chunk_size: int = CHUNK,
    device: str = "cpu",
    verified: Verified | None = None,
) -> Path:
    """Build (or find) the cache of one dataset at one size and preprocessing.

    Args:
        rows: the dataset's manifest rows (at least ``image_id`` and ``path``, relative to ``root``; an optional
            ``bits_stored`` gives the bit depth by which a 16-bit PNG is scaled, NaN where unknown).
        root: the dataset's root folder.
        study_dir: the study directory; the cache goes to ``<study_dir>/cache/<key>/``.
        dataset: the study's name for the dataset (first part of the key).
        size: output side in pixels (224 for densenet121, 299 for inception_resnet_v2).
        engine: one of :data:`cxrgen.images.preprocess.ENGINES`: ``exact`` (the default), ``skimage`` (the paper's
            functions), ``opencv`` (faster, CLAHE differs slightly), ``torch`` (JPEGs batched on ``device``).
        clahe: apply CLAHE before resizing.
        workers: processes; None = all cores, 1 = in this process.
        shard: ``(k, n)`` with 1 <= k <= n: only chunks with ``chunk_id % n == k - 1``.
        progress: called with (images done, images in all) at the start and after each chunk.
        chunk_size: images per chunk for a new build (a resumed build keeps its own).
        device: where engine ``torch`` runs, ``cpu`` or ``cuda`` (each worker process drives the device).
        verified: where the images this call decodes are also checked as verify checks them (at its
            ``max_pixels``), so that verify need not decode them again; ignored for engine ``torch``.

    Returns:
        The final cache folder once every chunk is done (by this or other shards); otherwise the
        ``<key>.partial`` folder, which a later shard or an unsharded run completes.
    """
    if shard is not None and not 1 <= shard[0] <= shard[1]:
        raise ValueError(f"shard must be (k, n) with 1 <= k <= n, got {shard}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if device not in ("cpu", "cuda") or (device != "cpu" and engine != "torch"):
        raise ValueError(f"device {device!r}: engine {engine} runs on cpu; engine torch on cpu or cuda")
    bits_column = stated_bits_list(rows)
    rows = rows[["image_id", "path"]].astype(str).assign(bits=bits_column)
    rows = rows.sort_values("image_id", kind="stable").reset_index(drop=True)
    bits = rows.pop("bits").tolist()
    duplicated = rows["image_id"].duplicated()
    if duplicated.any():
        raise CacheError(f"dataset {dataset!r}: duplicate image ids, e.g. {rows['image_id'][duplicated].iloc[0]}")
    root = Path(root)
    final = cache_dir(study_dir, dataset, size, engine, clahe)
    params = parameters(dataset, size, engine, clahe, device)
    digest = fingerprint(rows["image_id"].tolist(), rows["path"].tolist(), root, params, bits)
    if _published(final, digest):
        log.info("cache %s: up to date", final.name)
        if progress is not None:
            progress(len(rows), len(rows))
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    library = _engine_library(engine, device)  # a cache with work left to do needs its device
    meta = {
        **params,
        "fingerprint": digest,
        "count": len(rows),
        "chunk_size": chunk_size,
        "library": f"{engine} {library}",
        "root": str(root),
        "complete": False,
    }
    with _cache_lock(final):
        if _published(final, digest):  # another process published it meanwhile
            return final
        meta = _open_partial(partial, rows, meta, size)
    chunk_size = int(meta["chunk_size"])
    n_chunks = -(-len(rows) // chunk_size)
    done = _read_progress(partial)
    mine = [c for c in range(n_chunks) if shard is None or c % shard[1] == shard[0] - 1]
    todo = [c for c in mine if c not in done]
    count = sum(min(chunk_size, len(rows) - c * chunk_size) for c in done)
    if progress is not None:
        progress(count, len(rows))
    log.info("cache %s: %d of %d chunk(s) to do", final.name, len(todo), n_chunks)
    paths = [str(root / p) for p in rows["path"]]
    check = Check(verified.max_pixels, os.path.realpath(root)) if verified is not None and engine != "torch" else None
    tasks = [
        (str(partial / IMAGES), c, c * chunk_size, paths[c * chunk_size : (c + 1) * chunk_size], size, engine, clahe,
         device, bits[c * chunk_size : (c + 1) * chunk_size], check)
        for c in todo
    ]  # fmt: skip
    progress_log = _ProgressLog(partial / _progress_name(shard))
    fallback = 0
    try:
        for result in _run(tasks, workers or default_workers()):
            progress_log.record(result.chunk_id, result.failures, result.fallback)
            fallback += result.fallback
            if verified is not None and result.excluded is not None:
                _add_verified(verified, dataset, rows["image_id"], result, chunk_size)
            count += min(chunk_size, len(rows) - result.chunk_id * chunk_size)
            if progress is not None:
                progress(count, len(rows))
    finally:
        progress_log.close()
    if fallback:
        log.info("cache %s: %d image(s) not batched on %s went through the exact CPU engine", final.name, fallback,
                 device)  # fmt: skip
    # Shards finishing together: one assembles and publishes, the others find the published cache.
    with _cache_lock(final):
        if _published(final, digest):
            return final
        done = _read_progress(partial)
        if len(done) < n_chunks:
            log.info("cache %s: %d of %d chunk(s) done; other shards finish it", final.name, len(done), n_chunks)
            return partial
        return _finalize(partial, final, meta, done)


def _add_verified(verified: Verified, dataset: str, ids: pd.Series, result: ChunkResult, chunk_size: int) -> None:
    """Record a checked chunk's verdicts by image id."""
    start = result.chunk_id * chunk_size
    verified.checked.setdefault(dataset, set()).update(ids.iloc[start : start + chunk_size])
    verified.reasons.update((str(ids.iloc[row]), reason) for row, reason in result.excluded or ())
    verified.outside += result.outside


def _engine_library(engine: str, device: str) -> str:
    """The libraries that make an engine's pixels, for ``meta.json``; a ``cuda`` device that is absent is refused.

    Raises:
        CacheError: ``device="cuda"`` on a machine where torch finds no CUDA device.
    """
    exact = f"numba {version('numba')}, opencv {cv2.getVersionString()}, scikit-image {version('scikit-image')}"
    if engine != "torch":
        return {"skimage": version("scikit-image"), "opencv": cv2.getVersionString(), "exact": exact}[engine]
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise CacheError(
            f"preprocess.device: cuda, but torch {torch.__version__} finds no CUDA device on this machine "
            f"(built for CUDA {torch.version.cuda or 'none'}); use device: cpu or run prepare on a GPU node"
        )
    where = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return f"{torch.__version__}, torchvision {version('torchvision')} on {where}; other files: exact {exact}"


def _published(final: Path, digest: str) -> bool:
    meta = read_meta(final)
    return meta is not None and meta.get("fingerprint") == digest and bool(meta.get("complete"))


@contextlib.contextmanager
def _cache_lock(final: Path) -> Iterator[None]:
    """Serialize creating and publishing caches among processes (shards) on this host or a shared filesystem.

    An ``flock`` on ``cache/.cxrgen.utils.lock``, held only for those short steps, never while chunks are computed, so
    shards still work in parallel. The file stays (removing it would let two processes lock two inodes).
    """
    fd = os.open(final.parent / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


TaskArgs = tuple[str, int, int, Sequence[str], int, Engine, bool, str, Sequence[int | None], Check | None]


def _run(tasks: Sequence[TaskArgs], workers: int) -> Iterable[ChunkResult]:
    """Run chunk tasks in this process (one worker) or a process pool, yielding results as they finish."""
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            yield _chunk_worker(*task)
        return
    if any(task[5] in NUMBA_ENGINES for task in tasks):
        compile_ahead()  # numba compiles here, once per machine; every worker loads the kernels from its cache
    # A signal or an error ends the workers at once; the chunks in flight are simply not recorded (a rerun redoes
    # them).
    with worker_pool(workers, initializer=_single_thread_opencv) as pool:
        yield from pool.imap_unordered(_chunk_task, tasks)


def _chunk_task(task: TaskArgs) -> ChunkResult:
    return _chunk_worker(*task)


def open_cache(study_dir: Path, dataset: str, size: int, engine: str, clahe: bool) -> tuple[np.memmap, pd.DataFrame]:
    """A finished cache's images (read-only memmap [N, size, size]) and index (``row, image_id, ok, ...``)."""
    folder = cache_dir(study_dir, dataset, size, engine, clahe)
    meta = read_meta(folder)
    if meta is None or not meta.get("complete"):
        raise CacheError(f"{folder}: no finished cache; run `cxrgen prepare` (all shards) first")
    images = np.load(folder / IMAGES, mmap_mode="r")
    index = pd.read_parquet(folder / INDEX)
    if images.shape != (len(index), size, size):
        raise CacheError(f"{folder}: images.npy has shape {images.shape}, index has {len(index)} rows at {size}")
    return images, index
