"""Shared fixtures: where the real public data lives (skipped when absent) and small native-format writers."""

from __future__ import annotations

from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture
def realdata() -> Path:
    """``../shared/realdata`` beside the checkout; tests using it skip on a user's machine without it."""
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is absent")
    return REALDATA
