"""Issue 29: asking for hub weights without network fails in seconds, once, naming the three ways on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CODE = """
import time
from cxrgen.models.registry import create_model
from cxrgen.errors import CxrgenError
began = time.monotonic()
try:
    create_model("densenet121", 5, pretrained=True)
except CxrgenError as exc:
    print(f"{time.monotonic() - began:.2f}")
    print(exc)
"""


@pytest.mark.parametrize(
    "env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],  # the discard port: connection refused
    ids=["HF_HUB_OFFLINE", "hub-unreachable"],
)
def test_pretrained_weights_offline_fail_at_once_with_the_options(env: dict[str, str], tmp_path: Path) -> None:
    # An empty hub cache, so nothing a developer downloaded before can hide the failure.
    full = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    full.update({"HF_HOME": str(tmp_path / "hf"), **env})
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CODE], env=full, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seconds, message = done.stdout.split("\n", 1)
    assert float(seconds) < 20, "the failure itself must take seconds (imports included), not a minute of retries"
    for option in ("train.weights.densenet121", "train.weights_sha256.densenet121", "HF_HUB_OFFLINE=1",
                   "train.pretrained: false"):  # fmt: skip
        assert option in message, option
    assert "Retrying" not in done.stderr, "no retry warnings before the error"
    assert time.monotonic() - began < 300
