"""Dataset readers: one module per dataset, each registering ``read(root, *, name, labels, **options)``.

A reader returns the manifest rows of DESIGN.md section 4 with raw labels (``raw_<label>`` in {1, 0, -1, NaN});
label policies and view filters are applied by :mod:`cxrgen.manifest`. Adding a dataset is one module that
calls :func:`register`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from cxrgen.sources.common import SourceError


class Reader(Protocol):
    def __call__(self, root: Path, *, name: str, labels: list[str], **options: Any) -> pd.DataFrame: ...


READERS: dict[str, Reader] = {}


def register(name: str) -> Callable[[Reader], Reader]:
    """Decorator adding a reader to the registry under ``name``."""

    def add(reader: Reader) -> Reader:
        if name in READERS:
            raise ValueError(f"reader {name!r} registered twice")
        READERS[name] = reader
        return reader

    return add


def get_reader(name: str) -> Reader:
    """The reader registered as ``name``; an unknown name fails with the closest known names."""
    try:
        return READERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, READERS, n=2)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise SourceError(f"unknown dataset reader {name!r} (known: {', '.join(sorted(READERS))}){hint}") from None


# Importing the modules fills the registry.
from cxrgen.sources import brax, chexpert, mimic, nih, padchest, vindr  # noqa: E402

__all__ = [
    "READERS", "Reader", "SourceError", "brax", "chexpert", "get_reader", "mimic", "nih", "padchest", "register",
    "vindr",
]
