"""A lock on a study directory, so two ``cxrgen study`` processes never write the same runs.

The lock file holds the owner's host name and PID. A lock whose process is gone on this host (a killed run) is
stale and is taken over; a lock held by a live process, or by another host, is refused with its details.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from cxrgen.errors import CxrgenError

LOCK_NAME = ".cxrgen.lock"


class LockedError(CxrgenError):
    """Another live process works in this study directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_create(path: Path, payload: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    return True


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[Path]:
    """Hold the study directory's lock for the duration of the block."""
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    payload = json.dumps(me)
    for _ in range(2):
        if _try_create(path, payload):
            break
        try:
            owner = json.loads(path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            owner = {}
        same_host = owner.get("host") == me["host"]
        if same_host and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
            # Stale: its process died without releasing. Rename first so only one taker wins the race.
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, path.with_suffix(f".stale-{os.getpid()}"))
                path.with_suffix(f".stale-{os.getpid()}").unlink()
            continue
        raise LockedError(
            f"{study_dir}: another cxrgen process (pid {owner.get('pid', '?')} on {owner.get('host', '?')}) "
            f"is working here; wait for it, or remove {path} if it is no longer running"
        )
    else:
        raise LockedError(f"{study_dir}: could not take the lock {path}")
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if json.loads(path.read_text() or "{}") == me:
                path.unlink()
