"""DESIGN.md section 4's one-way imports, read from the source (AST), every import at any depth of a module.

A rule names modules by dotted prefix and what they may not import (cxrgen modules or third-party packages).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cxrgen"

#: The wings of DESIGN.md section 4, in the order of the flow.
WINGS = ("utils", "sources", "images", "models", "study", "data", "learn", "metrics", "shift", "report", "runner",
         "synthetic")  # fmt: skip
#: One rule per wing: the other wings it may import (``cxrgen.errors`` is open to all; the CLI to none).
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "utils": (),
    "sources": ("utils",),
    "images": ("utils",),
    "models": ("utils", "sources"),
    "study": ("utils", "sources", "models"),
    "data": ("utils", "sources", "images", "models", "study"),
    "learn": ("utils", "sources", "images", "models", "study", "data", "metrics"),
    "metrics": ("utils",),
    "shift": ("utils", "sources", "study", "data", "metrics"),
    "report": ("utils", "sources", "images", "models", "study", "data", "learn", "metrics", "shift"),
    "runner": ("utils", "sources", "images", "models", "study", "data", "learn", "metrics", "shift", "report"),
    "synthetic": ("utils",),
}
WHY = {
    "utils": "plumbing imports nothing above it",
    "sources": "sources know nothing of images or models",
    "images": "image operations know no dataset, study or model",
    "models": "the model registry knows no study file or data",
    "study": "the study file is read before any data or model code",
    "data": "data code knows no model or training",
    "learn": "learning knows no report and no runner",
    "metrics": "statistics are pure functions on arrays",
    "shift": "shift analyses know no model, learning or report",
    "report": "the report knows no runner",
    "runner": "the conductors are imported only by the CLI",
    "synthetic": "the synthetic hospitals import nothing else of cxrgen but the plumbing (atomic writes)",
}


def wing_rule(wing: str) -> tuple[str, tuple[str, ...], str]:
    """(the wing, every cxrgen wing and top-level module it may not import, why)."""
    allowed = {wing, *MAY_IMPORT[wing]}
    forbidden = tuple(f"cxrgen.{other}" for other in (*WINGS, "cli") if other not in allowed)
    return f"cxrgen.{wing}", forbidden, WHY[wing]


#: Third-party and module-level rules: (modules the rule covers, forbidden imports, why): prefixes of dotted names.
RULES: list[tuple[str, tuple[str, ...], str]] = [
    *(wing_rule(wing) for wing in WINGS),
    ("cxrgen.sources", ("torch", "timm", "lightning", "PIL", "cv2", "skimage"), "sources read tables, not images"),
    ("cxrgen.data", ("timm",), "data code knows no model"),
    ("cxrgen.metrics", ("torch", "lightning", "timm"), "metrics know no torch"),
    ("cxrgen.shift", ("torch", "lightning", "timm"), "shift analyses know no torch"),
    ("cxrgen.study", ("torch", "lightning", "timm"), "a study opens before torch is imported"),
    ("cxrgen.learn.predict", ("cxrgen.learn.train",), "prediction needs no training code"),
    ("cxrgen.sources.labels", ("torch", "cxrgen.sources.registry"), "the label vocabulary is a leaf"),
    ("cxrgen.data.cache", ("cxrgen.study.config",), "a cache is built from rows and a root, not a study file"),
    ("cxrgen.study.layout", ("pandas", "cxrgen.study.config"), "the layout is read before pandas is imported"),
    ("cxrgen.study.workspace", ("pandas",), "a study opens before pandas is imported"),
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
    broken = [line for rule in RULES if rule[0] == "cxrgen.sources"
              for line in violations({"cxrgen.sources.fake": found}, rule[0], rule[1])]  # fmt: skip
    assert broken == [
        "cxrgen.sources.fake imports cxrgen.images",
        "cxrgen.sources.fake imports cxrgen.images.decode",
        "cxrgen.sources.fake imports torch.nn",
    ]


def test_every_folder_of_the_package_is_a_wing_with_a_rule() -> None:
    folders = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert folders == set(WINGS) == set(MAY_IMPORT), "a new folder needs a place in the flow and a rule here"
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "cli", "errors"}, "modules belong in the wing of their stage"


def module_edges(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module -> the cxrgen modules it imports (anywhere in it, ``TYPE_CHECKING`` blocks included).

    ``from pkg import sub`` is an arrow to ``pkg.sub`` alone where ``sub`` is a module (the package's
    ``__init__`` runs first, but it is no step of the circle); ``from pkg import name`` is an arrow to ``pkg``.
    """
    edges: dict[str, set[str]] = {}
    for name, targets in modules.items():
        submodules = {t for t in targets if t in modules and t.rpartition(".")[0] in targets}
        bases = {t.rpartition(".")[0] for t in submodules}
        named = {t for t in targets if t.rpartition(".")[0] in targets and t not in modules}
        through_base = {t.rpartition(".")[0] for t in named}
        edges[name] = {t for t in targets if t in modules and (t not in bases or t in through_base)} - {name}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one node (Tarjan), each sorted: every import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


@pytest.mark.parametrize("wing", WINGS)
def test_no_import_circle_inside_a_wing(wing: str) -> None:
    inside = {name: targets for name, targets in MODULES.items() if covered(name, f"cxrgen.{wing}")}
    found = circles(module_edges(inside))
    assert not found, f"modules of {wing}/ import each other in a circle: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_wing_rules_form_no_circle() -> None:
    """With one-way wing rules and no circle inside a wing, the package as a whole has no import circle."""
    edges = {wing: set(allowed) for wing, allowed in MAY_IMPORT.items()}
    assert not circles(edges), f"MAY_IMPORT lets wings import each other in a circle: {circles(edges)}"


def test_the_circle_check_finds_a_function_level_import_circle() -> None:
    modules = {
        "cxrgen.synthetic.a": imports_in("from cxrgen.synthetic.b import f\n", "cxrgen.synthetic.a"),
        "cxrgen.synthetic.b": imports_in("def g():\n    from cxrgen.synthetic import a\n", "cxrgen.synthetic.b"),
        "cxrgen.synthetic": imports_in("from cxrgen.synthetic.c import f\n", "cxrgen.synthetic", is_package=True),
        "cxrgen.synthetic.c": imports_in("from cxrgen.synthetic.a import f\n", "cxrgen.synthetic.c"),
    }
    assert circles(module_edges(modules)) == [["cxrgen.synthetic.a", "cxrgen.synthetic.b"]]


def test_test_file_names_are_unique_across_folders() -> None:
    """pytest imports test files by their base name (no ``__init__.py`` in the folders): two alike collide."""
    names = [path.name for path in (SRC.parent / "tests").rglob("test_*.py")]
    assert sorted({name for name in names if names.count(name) > 1}) == []
