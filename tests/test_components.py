"""Issue 31: a test marked for a part outside Python skips where the part is absent or hidden, never fails, and
``CXRGEN_TEST_HIDE`` hides the part from the code under test too (the fresh-machine run of CI)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from components import HIDE_VARIABLE, SHADOW_VARIABLE

INNER = '''
import shutil
import pytest

@pytest.mark.requires("srun")
def test_marked_for_srun():
    assert shutil.which("srun") is not None, "ran although srun is absent"
    assert not {hidden!r}, "ran although srun is hidden"

def test_unmarked_sees_what_the_marker_sees():
    assert (shutil.which("srun") is None) == {hidden!r}
'''


def _fake_srun(folder: Path) -> None:
    """A real executable named ``srun``: the part is present on this PATH, whatever the machine has."""
    folder.mkdir()
    srun = folder / "srun"
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("hide", [False, True], ids=["present", "hidden"])
def test_a_marked_test_runs_where_its_part_is_present_and_skips_where_hidden(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, hide: bool
) -> None:
    _fake_srun(pytester.path / "bin")
    monkeypatch.setenv("PATH", f"{pytester.path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(SHADOW_VARIABLE, raising=False)
    if hide:
        monkeypatch.setenv(HIDE_VARIABLE, "srun")
    else:
        monkeypatch.delenv(HIDE_VARIABLE, raising=False)
    pytester.makeconftest('pytest_plugins = ["components"]\n')
    pytester.makepyfile(INNER.format(hidden=hide))
    tests = Path(__file__).resolve().parent
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", f"--rootdir={pytester.path}",
                                           "-o", f"pythonpath={tests}")  # fmt: skip
    if hide:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines([
            "*parts outside Python*", "srun: absent (hidden by CXRGEN_TEST_HIDE); 1 test(s) skipped",
            "*test_marked_for_srun", "*requires srun: hidden by CXRGEN_TEST_HIDE*",
        ])  # fmt: skip
    else:
        result.assert_outcomes(passed=2)


def test_an_unknown_part_is_a_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HIDE_VARIABLE, "slurm")
    monkeypatch.delenv(SHADOW_VARIABLE, raising=False)
    pytester.makeconftest('pytest_plugins = ["components"]\n')
    pytester.makepyfile("def test_x():\n    pass\n")
    tests = Path(__file__).resolve().parent
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", f"pythonpath={tests}")
    assert result.ret != 0
    assert "CXRGEN_TEST_HIDE: unknown part(s) ['slurm']" in result.stderr.str()
