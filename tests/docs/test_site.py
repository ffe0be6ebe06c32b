"""Issue 29: the documentation site builds strictly, its reference is generated from the code and complete, and the
tutorial's code runs as written."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import cxrgen

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema_keys(schema: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> set[str]:
    """Every key path of a pydantic JSON schema, walked independently of the docs generator."""
    if "$ref" in schema:
        return _schema_keys(defs[schema["$ref"].rsplit("/", 1)[1]], defs, prefix)
    keys: set[str] = set()
    for option in schema.get("anyOf", []) + schema.get("allOf", []):
        keys |= _schema_keys(option, defs, prefix)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        keys |= _schema_keys(schema["items"], defs, prefix.rstrip(".") + "[].") if prefix else set()
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        keys |= _schema_keys(extra, defs, prefix.rstrip(".") + ".<name>.")
    for name, sub in schema.get("properties", {}).items():
        keys.add(prefix + name)
        keys |= _schema_keys(sub, defs, prefix + name + ".")
    return keys


def test_every_study_file_key_is_in_the_generated_reference() -> None:
    from cxrgen.sources import READERS
    from cxrgen.study.config import StudyConfig

    schema = StudyConfig.model_json_schema()
    expected = _schema_keys(schema, schema.get("$defs", {}))
    for spec in READERS.values():
        reader = spec.options.model_json_schema()
        expected |= _schema_keys(reader, reader.get("$defs", {}), "datasets.<name>.")
    page = _hook().study_file_markdown()
    documented = set(re.findall(r"^\| `([^`]+)` \|", page, flags=re.M))
    assert expected - documented == set(), "study-file keys missing from the generated reference"
    assert {"train.seeds", "datasets.<name>.reader", "configurations[].external", "launcher.partition"} <= documented


def test_every_command_and_option_is_in_the_generated_reference() -> None:
    import typer

    from cxrgen.cli import app

    page = _hook().commands_markdown()
    commands = list(typer.main.get_command(app).commands.items())  # type: ignore[attr-defined]
    while commands:
        name, command = commands.pop(0)
        if hasattr(command, "commands"):  # a group (`cxrgen predictions`): its sub-commands are documented
            commands.extend((f"{name} {sub}", cmd) for sub, cmd in command.commands.items())
            continue
        assert f"### `cxrgen {name}`" in page, name
        for param in command.params:
            if param.name != "help" and param.opts[0].startswith("--"):
                assert f"`{param.opts[0]}" in page, (name, param.opts)


def test_the_public_api_resolves_and_is_documented() -> None:
    reference = (DOCS / "reference" / "api.md").read_text()
    for name in cxrgen.__all__:
        assert callable(getattr(cxrgen, name)), name
        assert re.search(rf"^::: cxrgen\.[\w.]+\.{name}$", reference, flags=re.M), f"{name} not in reference/api.md"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cxrgen.nothing  # noqa: B018


def test_the_python_api_tutorial_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = (DOCS / "tutorials" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "python-api.md", "exec"), namespace)  # the page's own assertions run too
    assert (tmp_path / "model_a.parquet").is_file()


def test_import_cxrgen_stays_light() -> None:
    code = "import sys, cxrgen; print(sorted(m for m in ('pandas', 'torch', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link, a missing page or an unresolvable API reference fails it."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    html = (tmp_path / "site" / "reference" / "study-file" / "index.html").read_text()
    assert "train.seeds" in html and "cxrgen:study-file" not in html


def test_all_lists_exactly_the_lazily_loaded_names() -> None:
    assert sorted(cxrgen.__all__) == sorted(cxrgen._PUBLIC)
