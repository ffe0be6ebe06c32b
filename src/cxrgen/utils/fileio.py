"""Atomic file writes: a file appears under its final name only when it is complete."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it is fsynced and renamed onto ``path``.

    On any error the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; a plain open would honour the umask
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``, kernel 4.7+).

    Elsewhere it is set and restored at once (``os.umask`` has no read-only form).
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temporary_dir(parent: Path, prefix: str) -> Path:
    """A new folder under ``parent`` with the mode a plain ``mkdir`` would give (``mkdtemp`` makes 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, 0o777 & ~current_umask())
    return folder


def sweep_temporaries(folder: Path) -> int:
    """Remove temporary files that a killed writer left behind (``.<name>.<random>.tmp``, see :func:`atomic_path`).

    Call only while no other process writes under ``folder`` (e.g. under the study lock).
    """
    removed = 0
    for path in folder.rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_csv(frame: pd.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_parquet(frame: pd.DataFrame, path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Write a parquet file atomically, with optional key/value metadata in its schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        merged = {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}}
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def parquet_metadata(path: Path | str) -> dict[str, str]:
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"pandas"}


def publish_dir(partial: Path, final: Path, same_as_ours: Callable[[Path], bool]) -> Path:
    """Put a finished ``partial`` folder in place of ``final`` with one rename, so readers see either the old
    folder or the new one. An old ``final`` is moved aside first and removed after. When the rename fails
    because a concurrent finisher (another shard) published first, that is fine if ``same_as_ours(final)``.
    """
    stale = final.with_name(f".{final.name}.stale-{os.getpid()}")
    if final.exists():
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, stale)
    try:
        os.rename(partial, final)
    except OSError:
        if not same_as_ours(final):
            raise
    shutil.rmtree(stale, ignore_errors=True)
    return final


def sha256_of(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
