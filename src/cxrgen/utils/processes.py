"""Processes by id: whether a recorded process id is still the process it was, and a child that dies with its parent.

A process id is reused once its process is gone, so an id alone cannot say whether a recorded job still runs: the
process's start time (``/proc/<pid>/stat``, else ``ps``) is recorded beside it and compared. A job process that is
killed outright (SIGKILL) cannot stop the children it started; :func:`die_with_parent` makes such a child end
with it, through Linux's ``PR_SET_PDEATHSIG`` (elsewhere a thread that watches the parent process id).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

#: ``prctl`` option: the signal this process gets when the thread that forked it ends (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None without it."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses


def _ps(pid: int, column: str) -> str | None:
    try:
        out = subprocess.run(["ps", "-p", str(pid), "-o", f"{column}="], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque stamp equal only for the same process; None when it is gone.

    Linux: the start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``); elsewhere ``ps``'s
    ``lstart``.
    """
    if Path("/proc/self/stat").exists():
        fields = _proc_stat(pid)
        return None if fields is None or fields[0] in ("Z", "X") else f"proc:{fields[19]}"
    stamp = _ps(pid, "lstart")
    return None if stamp is None else f"ps:{stamp}"


def process_command(pid: int) -> str | None:
    """The command line of process ``pid`` (arguments joined by spaces), or None when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None if Path("/proc/self/stat").exists() else _ps(pid, "command")
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def running(pid: int) -> bool:
    """Process ``pid`` exists (a zombie, ended and waiting for its parent to reap it, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _proc_stat(pid)
    return fields is None or fields[0] not in ("Z", "X")


def die_with_parent(parent: int | None = None) -> None:
    """End this process with SIGKILL as soon as its parent process ends, however the parent ends.

    Args:
        parent: the process id the parent must have; None: whichever parent this process has now. A parent that
            already ended before this call (this process was re-parented) ends this process at once.
    """
    parent = os.getppid() if parent is None else parent
    armed = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if os.getppid() != parent:  # the parent ended before the death signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
