"""Shared fixtures: where the real public data lives (skipped when absent) and small native-format writers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["components", "pytester"]

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The report cache's signing key (``$XDG_CACHE_HOME/cxrgen/``) in a temporary folder, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


@pytest.fixture
def realdata() -> Path:
    """``../shared/realdata`` beside the checkout; tests using it skip on a user's machine without it."""
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is absent")
    return REALDATA


# ------------------------------------------------------------------------------------------------- fixtures
# For the fault tests that damage one file of a fresh copy each (test_faults_inputs, _tables, _hostile); a module
# that defines its own ``data`` fixture uses that one.


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic hospitals with ``study.yaml`` (chexpert + nih trained, mimic external), written once."""
    from cxrgen.synthetic import write_synthetic
    from helpers import faults as faults_helpers

    root = tmp_path_factory.mktemp("pristine")
    write_synthetic(root, seed=0, scale=0.05, image_size=64)
    (root / "study.yaml").write_text(faults_helpers.study_yaml(datasets=("chexpert", "nih", "mimic")))
    return root


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of :func:`pristine` for one test to damage."""
    shutil.copytree(pristine, tmp_path / "d")
    return tmp_path / "d"
