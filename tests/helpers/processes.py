"""Process-tree helpers of the signal tests (issue 14): which processes a command started, and whether they ended.

Read from ``/proc`` (Linux), so the tests see the real forkserver, pool workers and resource tracker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc (Linux) to see a command's child processes")
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None and stat[0] != "Z":
            parents[int(entry)] = stat[1]
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid``."""
    return {child for child in descendants(pid) if (stat := _stat(child)) is not None and stat[1] == pid}


def alive(pid: int) -> bool:
    """Running or stopped, not gone and not a zombie waiting for its (new) parent to reap it."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def wait_gone(pids: set[int], timeout: float = 20) -> set[int]:
    """Wait until none of ``pids`` is alive; returns those still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := {pid for pid in pids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_all(pids: set[int]) -> None:
    """SIGKILL leftovers so a failing test does not leave them running on a shared machine."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
