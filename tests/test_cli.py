"""What a user sees first: ``cxrgen --help`` in stage order, and ``--until`` as a choice."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from cxrgen.cli import STAGE_ORDER, app

runner = CliRunner()


def test_help_lists_commands_in_stage_order() -> None:
    result = runner.invoke(app, ["--help"], terminal_width=100)
    assert result.exit_code == 0
    listed = re.findall(r"^│ (\w+)\s{2,}", result.output, flags=re.MULTILINE)
    known = [name for name in listed if name in STAGE_ORDER]
    assert known == sorted(known, key=STAGE_ORDER.index)
    assert {"synthesize", "prepare", "study", "report", "models"} <= set(known)
    assert listed.index("synthesize") == 0


def test_until_is_a_choice_checked_before_reading_the_study(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = runner.invoke(app, ["prepare", str(missing), "--until", "cahce"])
    assert result.exit_code == 2
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert "'cahce' is not one of 'manifest', 'splits', 'verify', 'cache'" in text
