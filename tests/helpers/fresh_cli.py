"""``cxrgen <args>`` in a fresh interpreter, and which of some heavy packages it left in ``sys.modules``.

Commands that answer at once, or that only read metadata, must not import pandas or torch; only a new
interpreter shows what a command imports. The driver runs ``cxrgen.cli.main`` and prints one ``IMPORTED=`` line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

DRIVER = """\
import json, sys
from cxrgen.cli import main
heavy = sys.argv[1].split(",")
sys.argv = ["cxrgen", *sys.argv[2:]]
try:
    main()
except SystemExit as stop:
    code = stop.code
else:
    code = 0
print("IMPORTED=" + json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}))
"""


def run_fresh(
    *args: str, cwd: Path, heavy: tuple[str, ...], env: Mapping[str, str] | None = None, timeout: float = 300
) -> tuple[int, list[str], str]:
    """Run ``cxrgen <args>``: its exit code, the packages of ``heavy`` it imported, and its output."""
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, ",".join(heavy), *args], cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("IMPORTED=")]
    assert lines, done.stdout + done.stderr
    found = json.loads(lines[-1].removeprefix("IMPORTED="))
    return found["code"], found["heavy"], done.stdout + done.stderr
