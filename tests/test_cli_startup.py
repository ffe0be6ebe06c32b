"""Commands that answer at once (issue 30): help and usage errors import no pandas, numpy, pyarrow or torch.

Each command imports its machinery in its body; ``cxrgen --help`` builds every command's options all the same, so
a heavy import at the top of ``cxrgen.cli`` (or of a module it imports) would show here. Each case runs in a fresh
interpreter, on the ``cxrgen`` these tests import.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import typer

import cxrgen
from cxrgen.cli import app
from helpers.fresh_cli import run_fresh

SRC = Path(cxrgen.__file__).resolve().parents[1]
HEAVY = ("pandas", "numpy", "pyarrow", "torch")


def run_cli(*args: str, cwd: Path) -> tuple[int, list[str], str]:
    """``cxrgen <args>`` in a new interpreter: its exit code, the heavy packages it imported, and its output."""
    return run_fresh(*args, cwd=cwd, heavy=HEAVY, env={"PYTHONPATH": str(SRC), "COLUMNS": "100"}, timeout=120)


def test_help_imports_nothing_heavy_and_lists_every_command(tmp_path: Path) -> None:
    code, heavy, output = run_cli("--help", cwd=tmp_path)
    assert (code, heavy) == (0, []), output
    group = typer.main.get_command(app)
    commands = group.list_commands(click.Context(group))
    assert len(commands) >= 13
    assert re.findall(r"^│ (\w+)\s{2,}", output, flags=re.MULTILINE) == commands


@pytest.mark.parametrize(
    "args",
    [("prepare", "--help"), ("plan", "--help"), ("report", "--help"), ("predictions", "convert", "--help")],
    ids=" ".join,
)
def test_command_help_imports_nothing_heavy(args: tuple[str, ...], tmp_path: Path) -> None:
    code, heavy, output = run_cli(*args, cwd=tmp_path)
    assert (code, heavy) == (0, []), output
    assert "Usage:" in output


@pytest.mark.parametrize(
    "args", [("plan",), ("prepare", "study.yaml", "--until", "cahce"), ("nosuchcommand",)], ids=" ".join
)
def test_usage_errors_import_nothing_heavy(args: tuple[str, ...], tmp_path: Path) -> None:
    code, heavy, output = run_cli(*args, cwd=tmp_path)
    assert (code, heavy) == (2, []), output
