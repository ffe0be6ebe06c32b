"""The reader registry: each dataset module registers its reader with its options model and label spellings.

A reader is ``read(root, *, name, labels, options) -> DataFrame`` (the manifest rows of DESIGN.md section 4 with
raw labels). Its options are a pydantic model of the keys a study file may give beside ``reader`` and ``root``
(``{reader: nih, root: ..., metadata: Data_Entry_2017.csv}``), so a new dataset is one module and one line in
:mod:`cxrgen.sources`, and an unknown or malformed key is refused when the study file is read, naming it.
This module imports no reader, so readers import it without a cycle.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from cxrgen.errors import validation_errors
from cxrgen.sources.common import SourceError

ReadFunction = Callable[..., pd.DataFrame]


class ReaderOptions(BaseModel):
    """Base of every reader's options: unknown keys are refused (an option spelt wrong is never ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def labelled(self) -> bool:
        """Whether the dataset read with these options has labels (an unlabelled one is an external test set only)."""
        return True


@dataclass(frozen=True)
class ReaderSpec:
    """A registered reader. Calling it validates keyword options through :attr:`options` and reads."""

    name: str
    read: ReadFunction
    options: type[ReaderOptions]
    #: Study label -> this dataset's spelling where it differs (NIH's ``Effusion`` for Pleural Effusion).
    label_names: Mapping[str, str] = field(default_factory=dict)

    def spelling(self, label: str) -> str:
        return self.label_names.get(label, label)

    def parse_options(self, options: Mapping[str, Any]) -> ReaderOptions:
        """The options model of ``options``; a bad key or value is a :class:`SourceError` naming it."""
        try:
            return self.options.model_validate(dict(options))
        except ValidationError as exc:
            raise SourceError(f"{self.name} reader: {validation_errors(exc)}") from None

    def __call__(
        self, root: Path, *, name: str, labels: list[str], options: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Read dataset ``name`` under ``root``; ``options`` are the study file's keys beside reader and root."""
        return self.read(root, name=name, labels=labels, options=self.parse_options(options or {}))


READERS: dict[str, ReaderSpec] = {}


def register(
    name: str, *, options: type[ReaderOptions] = ReaderOptions, labels: Mapping[str, str] | None = None
) -> Callable[[ReadFunction], ReadFunction]:
    """Decorator adding ``read`` to the registry under ``name`` with its options model and label spellings."""

    def add(read: ReadFunction) -> ReadFunction:
        if name in READERS:
            raise ValueError(f"reader {name!r} registered twice")
        READERS[name] = ReaderSpec(name, read, options, dict(labels or {}))
        return read

    return add


def get_reader(name: str) -> ReaderSpec:
    """The reader registered as ``name``; an unknown name fails with the closest known names."""
    try:
        return READERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, READERS, n=2)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise SourceError(f"unknown dataset reader {name!r} (known: {', '.join(sorted(READERS))}){hint}") from None
