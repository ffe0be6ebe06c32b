"""mkdocs hook: the reference pages are generated from the code at build time, so they cannot drift from it.

A page holds a marker comment; the hook replaces it with a table made from the objects themselves:

* ``<!-- cxrgen:study-file -->``: every study-file key, walked from :class:`cxrgen.study.config.StudyConfig`'s
  pydantic fields (nested models, mappings and lists of models), then every reader's own keys from the reader
  registry (:data:`cxrgen.sources.READERS`).
* ``<!-- cxrgen:commands -->``: every command of the Typer app with its arguments and options.

Written by hand because mkdocstrings documents Python objects, not a configuration schema or a command line.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

Row = tuple[str, str, str, str]  # key, type, default, description


def _type_name(annotation: Any) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    for noise in ("typing.", "pathlib.", "cxrgen.study.config.", "<class '", "'>"):
        text = text.replace(noise, "")
    return text


def _models_inside(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """(key suffix, model) for models reachable through Optional, list[...] and dict[str, ...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return [found for arg in args for found in _models_inside(arg)]
    if origin is list and args:
        return [("[]" + suffix, model) for suffix, model in _models_inside(args[0])]
    if origin is dict and len(args) == 2:
        return [(".<name>" + suffix, model) for suffix, model in _models_inside(args[1])]
    return []


def _default(info: FieldInfo) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
        return "" if isinstance(value, BaseModel) else f"`{value!r}`"
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return ""
        return f"`{value!r}`"
    return "required"


def model_rows(model: type[BaseModel], prefix: str = "") -> list[Row]:
    """One row per key of ``model`` and, recursively, of the models its fields hold."""
    rows: list[Row] = []
    for name, info in model.model_fields.items():
        if info.exclude or name.startswith("_"):
            continue
        key = f"{prefix}{name}"
        rows.append((key, _type_name(info.annotation), _default(info), info.description or ""))
        for suffix, inner in _models_inside(info.annotation):
            rows.extend(model_rows(inner, f"{key}{suffix}."))
    return rows


def study_file_rows() -> list[Row]:
    """Every study-file key: the study model's, then each reader's own keys under ``datasets.<name>.``."""
    from cxrgen.sources import READERS
    from cxrgen.study.config import StudyConfig

    rows = model_rows(StudyConfig)
    for name in sorted(READERS):
        for key, kind, default, text in model_rows(READERS[name].options, "datasets.<name>."):
            rows.append((key, kind, default, f"`reader: {name}`" + (f": {text}" if text else "")))
    return rows


def _table(header: Row, rows: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(part) for part in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def study_file_markdown() -> str:
    return _table(("key", "type", "default", "meaning"), [(f"`{k}`", f"`{t}`", d, m) for k, t, d, m in study_file_rows()])


def command_rows() -> list[tuple[str, list[Row]]]:
    """(command line, one row per parameter) for every command of the CLI, in the app's order."""
    import typer
    from typer.core import TyperOption

    from cxrgen.cli import app

    found: list[tuple[str, list[Row]]] = []

    def walk(group: Any, words: str) -> None:
        # Typer vendors its own click: groups are told by their ``commands``, options by TyperOption.
        for name, command in group.commands.items():
            line = f"{words} {name}"
            if hasattr(command, "commands"):
                walk(command, line)
                continue
            rows: list[Row] = []
            for param in command.params:
                if param.name == "help":
                    continue
                spelled = ", ".join(param.opts) if isinstance(param, TyperOption) else (param.name or "").upper()
                default = "" if param.required or param.default is None or param.default is False or param.default == () else f"`{param.default!r}`"
                helptext = getattr(param, "help", None) or ""
                rows.append((f"`{spelled}`", "required" if param.required else "optional", default, helptext))
            found.append((line.strip() + (": " + (command.help or "").strip().splitlines()[0] if command.help else ""),
                          rows))  # fmt: skip

    walk(typer.main.get_command(app), "cxrgen")
    return found


def commands_markdown() -> str:
    parts = []
    for title, rows in command_rows():
        command, _, summary = title.partition(": ")
        parts.append(f"### `{command}`\n\n{summary}\n\n" + (_table(("parameter", "", "default", "meaning"), rows) if rows
                                                            else "No options.\n"))  # fmt: skip
    return "\n".join(parts)


MARKERS = {"<!-- cxrgen:study-file -->": study_file_markdown, "<!-- cxrgen:commands -->": commands_markdown}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs hook: replace each marker by its generated table."""
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
