"""A lock on a study directory, so two ``cxrgen study`` processes never write the same runs.

The lock is an ``flock`` on ``.cxrgen.utils.lock``: the kernel releases it when its holder dies, so a lock left by a
killed run is free and is taken over, and two processes can never both take it. The file also names its holder
(host and PID) for the message a refused process prints. A file naming another host is refused even when its
``flock`` is free, because ``flock`` does not reach across hosts on every network filesystem.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from cxrgen.errors import CxrgenError

LOCK_NAME = ".cxrgen.utils.lock"


class LockedError(CxrgenError):
    """Another live process works in this study directory."""


def _holder(fd: int) -> dict[str, object]:
    try:
        return dict(json.loads(os.pread(fd, 4096, 0).decode() or "{}"))
    except (OSError, ValueError):
        return {}


def _refuse(study_dir: Path, path: Path, holder: dict[str, object]) -> LockedError:
    return LockedError(
        f"{study_dir}: another cxrgen process (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) "
        f"is working here; wait for it, or remove {path} if it is no longer running"
    )


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[Path]:
    """Hold the study directory's lock for the duration of the block."""
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise _refuse(study_dir, path, holder) from None
        # The previous holder may have unlinked the file between our open and our flock: lock the current file.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        locked = os.fstat(fd)
        if (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino):
            break
        os.close(fd)
    holder = _holder(fd)
    if holder.get("host") not in (None, me["host"]):
        os.close(fd)
        raise _refuse(study_dir, path, holder)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # releases the flock


#: Environment variables that name a process's rank under torchrun, Lightning's launcher or SLURM.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


@contextlib.contextmanager
def run_lock(run_folder: Path) -> Iterator[Path]:
    """Hold a run folder's lock, so a ``cxrgen study`` and a ``cxrgen train`` never train one run at once.

    Only the first process of a distributed run (rank 0 by every variable that is set) takes it: the other ranks
    of the same run work in the same folder by design.
    """
    if any(os.environ.get(name, "0") != "0" for name in _RANK_VARIABLES):
        yield run_folder / LOCK_NAME
        return
    with study_lock(run_folder) as path:
        yield path
