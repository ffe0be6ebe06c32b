"""Checkpoint files: dicts of state_dicts and plain values, written atomically, read with ``weights_only=True``.

A checkpoint is a pickle, and unpickling arbitrary objects runs arbitrary code. So writing refuses anything but
tensors and plain Python values, and reading uses ``torch.load(weights_only=True)`` with no fallback: a file
that needs more is refused by name. A checkpoint appears under its final name only once complete (temporary
file in the same folder, fsync, ``os.replace``), so a kill while saving leaves the previous checkpoint intact.
:class:`AtomicCheckpointIO` is the same two functions as Lightning's checkpoint I/O plugin.
"""

from __future__ import annotations

import errno
import pickle
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from cxrgen.errors import CxrgenError
from cxrgen.study.layout import vanished_study
from cxrgen.utils.fileio import atomic_path

_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.device, torch.Size)


class CheckpointError(CxrgenError):
    """A checkpoint that cannot be written or read safely; the message names the file."""


def _check_plain(value: Any, where: str) -> None:
    """Raise on the first value ``torch.load(weights_only=True)`` would refuse; ``where`` is its key path."""
    if isinstance(value, _PLAIN):
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool | type(None)):
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} is not a plain value")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple, set):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, not a tensor or plain value")


def save_checkpoint(state: Mapping[str, Any], path: Path | str) -> None:
    """Write ``state`` to ``path`` atomically.

    Args:
        state: Nested dicts, lists and tuples of tensors, numbers, strings, booleans and ``None``.
        path: Destination; its folder is created. The previous file under this name stays until the new one
            is complete.

    Raises:
        CheckpointError: ``state`` holds another kind of object (it could not be read back safely), or the write
            failed (a full disk, or a folder removed meanwhile: each named).
    """
    path = Path(path)
    try:
        _check_plain(dict(state), "checkpoint")
    except TypeError as exc:
        raise CheckpointError(f"refusing to write checkpoint {path}: {exc}") from exc
    try:
        with atomic_path(path) as tmp:
            torch.save(dict(state), tmp)
    except (OSError, RuntimeError) as exc:
        raise _write_error(path, state, exc) from exc


def _write_error(path: Path, state: Mapping[str, Any], exc: OSError | RuntimeError) -> CheckpointError:
    """One line for a failed checkpoint write; torch reports a full disk as ``RuntimeError: ... file write failed``.

    A folder removed while writing is named as such: its free space cannot be asked, and no rerun resumes into it.
    """
    if (gone := _gone(path)) is not None:
        return CheckpointError(f"{gone}: could not write checkpoint {path}")
    needed = _tensor_bytes(state)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = -1
    full = getattr(exc, "errno", None) == errno.ENOSPC or 0 <= free < needed
    reason = "No space left on device" if full else " ".join(str(exc).split())
    return CheckpointError(
        f"{reason}: could not write checkpoint {path} (about {needed:,} bytes needed, {free:,} free in "
        f"{path.parent}); the previous {path.name}, if any, is kept and a rerun resumes from it"
    )


def _gone(path: Path) -> str | None:
    """Why ``path`` cannot be written because a folder above it vanished (the study's, else the nearest), or None."""
    study = vanished_study(path)
    if study is not None:
        return f"the study folder {study} no longer exists (removed or moved while the run was writing)"
    if path.parent.is_dir():
        return None
    missing = path.parent
    while not missing.parent.is_dir() and missing.parent != missing:
        missing = missing.parent
    return f"the folder {missing} no longer exists (removed or moved while writing)"


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a nested checkpoint state (what ``torch.save`` will write, give or take headers)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, list | tuple | set):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file is missing, truncated or damaged, or holds pickled objects other than tensors
            and plain values (refused, never loaded another way).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds pickled objects other than tensors and plain values; refused because "
            f"loading them could run code ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or damaged and cannot be read ({exc}); other checkpoints in "
            f"{path.parent} are untouched"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


class AtomicCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O through :mod:`cxrgen.learn.checkpoints`: atomic writes, ``weights_only=True`` reads.

    Used for saving and for ``Trainer.fit(ckpt_path=...)``, so resuming never unpickles arbitrary objects.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        save_checkpoint(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        return load_checkpoint(Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
