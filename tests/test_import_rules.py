"""DESIGN.md section 4's one-way imports, read from the source (AST), every import at any depth of a module.

A rule names modules by dotted prefix and what they may not import (cxrgen modules or third-party packages).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cxrgen"

#: (modules the rule covers, forbidden imports, why): prefixes of dotted names.
RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("cxrgen.sources", ("cxrgen.images", "cxrgen.cache", "cxrgen.models", "cxrgen.data", "cxrgen.training", "torch",
                        "timm", "lightning", "PIL", "cv2", "skimage"), "sources know nothing of images or models"),
    ("cxrgen.data", ("cxrgen.models", "cxrgen.training", "timm"), "data code knows no model"),
    ("cxrgen.metrics", ("torch", "lightning", "timm"), "metrics know no torch"),
    ("cxrgen.training", ("cxrgen.report",), "training knows no report"),
    ("cxrgen.predict", ("cxrgen.training", "cxrgen.report"), "prediction needs no training code"),
    ("cxrgen.labels", ("torch", "cxrgen.sources", "cxrgen.models"), "the label vocabulary is a leaf"),
    ("cxrgen.saliency", ("cxrgen.report", "cxrgen.training"), "Grad-CAM is a model question, not report code"),
    ("cxrgen.cache", ("cxrgen.config", "cxrgen.prepare"), "a cache is built from rows and a root, not a study file"),
    ("cxrgen.models", ("cxrgen.config",), "the model registry knows no study file"),
    ("cxrgen.layout", ("torch", "lightning", "timm", "pandas", "cxrgen.config"),
     "the layout is read before torch is imported"),
    ("cxrgen.workspace", ("torch", "lightning", "timm", "pandas"), "a study opens before torch is imported"),
]
CLI_RULE = "the CLI is imported by nothing"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def imports_in(source: str, name: str, *, is_package: bool = False) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names anywhere in ``source``, relative ones resolved."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(modules: dict[str, set[str]], prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in modules.items() if covered(name, prefix)
        for target in targets if any(covered(target, bad) for bad in forbidden)
    )  # fmt: skip


def covered(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


MODULES = {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize(("prefix", "forbidden", "why"), RULES, ids=[rule[0] for rule in RULES])
def test_one_way_imports(prefix: str, forbidden: tuple[str, ...], why: str) -> None:
    assert any(covered(name, prefix) for name in MODULES), f"rule {prefix!r} covers no module: rename it"
    broken = violations(MODULES, prefix, forbidden)
    assert not broken, f"{why}: " + "; ".join(broken)


def test_nothing_imports_the_cli() -> None:
    others = {name: targets for name, targets in MODULES.items() if name not in {"cxrgen.cli", "cxrgen.__main__"}}
    broken = violations(others, "cxrgen", ("cxrgen.cli",))
    assert not broken, f"{CLI_RULE}: {broken}"


def test_the_checker_finds_nested_relative_imports_and_flags_them() -> None:
    source = "import numpy\n\ndef f():\n    from ..images import decode\n    import torch.nn\n"
    found = imports_in(source, "cxrgen.sources.fake")
    assert {"cxrgen.images", "cxrgen.images.decode", "torch.nn", "numpy"} <= found
    rule = next(rule for rule in RULES if rule[0] == "cxrgen.sources")
    assert violations({"cxrgen.sources.fake": found}, rule[0], rule[1]) == [
        "cxrgen.sources.fake imports cxrgen.images",
        "cxrgen.sources.fake imports cxrgen.images.decode",
        "cxrgen.sources.fake imports torch.nn",
    ]
