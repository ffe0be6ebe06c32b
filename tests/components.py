"""Parts outside Python that some tests need, one lookup each, and a switch that hides them (issue 31).

A test that needs SLURM, munge, Chromium, a CUDA device or root's ``mount`` says so with
``@pytest.mark.requires("sbatch", "munged")``; where a part is absent the test skips with ``requires <part>: why``
instead of failing. ``CXRGEN_TEST_HIDE=all`` (or a comma-separated list of parts) makes every lookup, the tests'
and the code's under test alike, see the hidden parts as absent: their executables are dropped from a shadow
``PATH`` and CUDA devices from ``CUDA_VISIBLE_DEVICES``, so a test that silently depends on an installed part fails
in that run. CI runs the suite once so, as a fresh machine with only Python and make would. At the end of a run,
the summary names the absent parts and the tests that skipped for each.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

HIDE_VARIABLE = "CXRGEN_TEST_HIDE"
SHADOW_VARIABLE = "CXRGEN_TEST_SHADOW_PATH"
SKIP_PREFIX = "requires "

#: Executables by part name: the part is present when every one is on the PATH.
EXECUTABLES: dict[str, tuple[str, ...]] = {
    "srun": ("srun",),
    "sbatch": ("sbatch", "squeue", "sinfo"),
    "slurmctld": ("slurmctld", "slurmd"),
    "munged": ("munged",),
    "chromium": ("chromium",),
    "mount": ("mount", "umount"),
}
#: What a user would install for each part, for the skip reason.
INSTALL: dict[str, str] = {
    "srun": "Debian's slurm-wlm",
    "sbatch": "Debian's slurm-wlm",
    "slurmctld": "Debian's slurm-wlm",
    "munged": "Debian's munge",
    "chromium": "Debian's chromium (`make screenshot` installs it)",
    "mount": "util-linux's mount",
    "root": "running the tests as root",
    "cuda": "a CUDA device and a CUDA build of torch",
}
COMPONENTS = (*EXECUTABLES, "root", "cuda")


def hidden() -> set[str]:
    """The parts ``CXRGEN_TEST_HIDE`` hides: ``all``, or names from :data:`COMPONENTS`."""
    value = os.environ.get(HIDE_VARIABLE, "").strip()
    if not value:
        return set()
    names = set(COMPONENTS) if value == "all" else {name.strip() for name in value.split(",") if name.strip()}
    unknown = names - set(COMPONENTS)
    if unknown:
        raise pytest.UsageError(f"{HIDE_VARIABLE}: unknown part(s) {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
    return names


def hide_components() -> None:
    """Make hidden parts absent for this process and its children: a shadow PATH without their executables.

    Every directory of the PATH is mirrored by symbolic links to its executables, less the hidden ones, in one
    folder that replaces the PATH; xdist workers inherit it from the controller (``CXRGEN_TEST_SHADOW_PATH``).
    """
    names = hidden()
    if not names:
        return
    if "cuda" in names:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    blocked = {exe for name in names for exe in EXECUTABLES.get(name, ())}
    if "root" in names:
        blocked |= set(EXECUTABLES["mount"])
    if os.environ.get(SHADOW_VARIABLE) == os.environ.get("PATH"):
        return
    shadow = Path(tempfile.mkdtemp(prefix="cxrgen-hidden-path-"))
    atexit.register(shutil.rmtree, shadow, ignore_errors=True)  # its creator removes it; workers only inherit it
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            target = shadow / entry.name
            if entry.name in blocked or target.exists() or not os.access(entry, os.X_OK) or entry.is_dir():
                continue
            target.symlink_to(entry)
    os.environ["PATH"] = str(shadow)
    os.environ[SHADOW_VARIABLE] = str(shadow)


def _cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "torch finds no CUDA device"


def _root() -> str | None:
    return None if os.geteuid() == 0 else "not root"


def absent_because(name: str) -> str | None:
    """Why part ``name`` is absent here (hidden, not found), or None when a test may use it."""
    if name not in COMPONENTS:
        raise pytest.UsageError(f"requires({name!r}): unknown part; known: {', '.join(COMPONENTS)}")
    if name in hidden():
        return f"hidden by {HIDE_VARIABLE}"
    missing = [exe for exe in EXECUTABLES.get(name, ()) if shutil.which(exe) is None]
    if missing:
        return f"{', '.join(missing)} not on the PATH (install {INSTALL[name]})"
    checks: dict[str, Callable[[], str | None]] = {"cuda": _cuda, "root": _root}
    found = checks[name]() if name in checks else None
    return None if found is None else f"{found} (needs {INSTALL[name]})"


def executable(name: str) -> str:
    """The path of part ``name``'s first executable, for a test marked ``requires(name)``."""
    path = shutil.which(EXECUTABLES[name][0])
    assert path is not None, f"{name}: the requires marker should have skipped this test"
    return path


# --------------------------------------------------------------------------------------------------- hooks


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(*parts): needs parts outside Python; skips where one is absent")
    hide_components()


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("requires"):
        for name in marker.args:
            why = absent_because(name)
            if why is not None:
                pytest.skip(f"{SKIP_PREFIX}{name}: {why}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The parts this run did not have and the tests that skipped for each: what was not tested here."""
    skipped: dict[str, list[str]] = defaultdict(list)
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        found = re.search(rf"{SKIP_PREFIX}(\S+): ", reason)
        if found:
            skipped[found.group(1)].append(report.nodeid)
    absent = {name: why for name in COMPONENTS if (why := absent_because(name)) is not None}
    if not absent and not skipped:
        return
    terminalreporter.section("parts outside Python")
    for name in COMPONENTS:
        if name in absent or name in skipped:
            tests = skipped.get(name, [])
            terminalreporter.write_line(f"{name}: absent ({absent.get(name, 'present')}); {len(tests)} test(s) skipped")
            for nodeid in tests:
                terminalreporter.write_line(f"    {nodeid}")
