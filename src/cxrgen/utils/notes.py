"""Warnings a user reads: one line per kind with a count, without source file and line numbers.

A report over 12 runs can raise the same warning dozens of times (one per label, run and test set); printed one by
one, with Python's ``path.py:44: OneClassWarning:`` prefix and the source line under it, they bury what differs.
Here a *kind* is the warning's category (or logger) and its message with every number and quoted name replaced,
so "AUC undefined for 'Edema': 0 positive ..." and "... for 'Atelectasis': 0 positive ..." are one kind.

- :class:`Tally` counts every record of level WARNING or above by kind and keeps the first message of each.
- :class:`ConsoleFilter` (on the console handler, unless ``--verbose``) strips the path, line and source line from
  Python warnings and lets only the first record of each kind through.
- :func:`collect_warnings` routes Python warnings into logging for a block and yields a :class:`Tally` of what the
  block raised (the report's "Notes" section).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI installs the tally and the filter before every command, --help included: no pandas
    import pandas as pd

#: ``/path/module.py:44: OneClassWarning: message`` as :func:`warnings.formatwarning` writes it (first line).
_PY_WARNING = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<category>\w+): (?P<message>.*)$", re.DOTALL)
_SHORT = re.compile(r"^(?P<category>\w+): (?P<message>.*)$", re.DOTALL)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(\.\d+)?(e[-+]?\d+)?")
_PATH = re.compile(r"(/[^\s:,;'\"()]+)+")


def clean_message(record: logging.LogRecord) -> tuple[str, str]:
    """``(category, message)`` of a record: a Python warning without its path, line and source line.

    ``category`` is the warning class for Python warnings and the logger's last name otherwise.
    """
    text = record.getMessage()
    if record.name == "py.warnings":
        first = text.split("\n", 1)[0]
        match = _PY_WARNING.match(first) or _SHORT.match(first)  # as Python writes it, or as ConsoleFilter did
        if match:
            return match["category"], match["message"].strip()
    return record.name.rsplit(".", 1)[-1], text.strip()


def kind_of(record: logging.LogRecord) -> str:
    """The kind of a record: category, then the message with paths, quoted names and numbers replaced."""
    category, message = clean_message(record)
    if record.name != "py.warnings" and isinstance(record.msg, str) and record.args:
        message = record.msg  # a logging call's template is its kind
    template = _NUMBER.sub("#", _QUOTED.sub("'…'", _PATH.sub("…", message)))
    return f"{category}: {template}"


@dataclass
class _Kind:
    category: str
    first: str
    count: int = 0


class Tally(logging.Handler):
    """Counts WARNING records by kind (:func:`kind_of`); keeps each kind's first message."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.kinds: dict[str, _Kind] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = kind_of(record)
        if key not in self.kinds:
            category, message = clean_message(record)
            self.kinds[key] = _Kind(category, message)
        self.kinds[key].count += 1

    @property
    def total(self) -> int:
        return sum(k.count for k in self.kinds.values())

    def lines(self) -> list[str]:
        """One line per kind, most frequent first: ``12 x OneClassWarning: <first message> (and 11 alike)``."""
        out = []
        for kind in sorted(self.kinds.values(), key=lambda k: -k.count):
            alike = f" (first of {kind.count} alike)" if kind.count > 1 else ""
            out.append(f"{kind.count} x {kind.category}: {kind.first}{alike}")
        return out


    def frame(self) -> pd.DataFrame:
        """``category, count, message`` per kind, most frequent first (``notes.csv``)."""
        import pandas as pd

        rows = [{"category": k.category, "count": k.count, "message": k.first}
                for k in sorted(self.kinds.values(), key=lambda k: -k.count)]
        return pd.DataFrame(rows, columns=["category", "count", "message"])


class ConsoleFilter(logging.Filter):
    """On the console: Python warnings without path and line; only the first record of each kind shown."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = kind_of(record)
        if key in self.seen:
            return False
        self.seen.add(key)
        if record.name == "py.warnings":
            category, message = clean_message(record)
            record.msg, record.args = f"{category}: {message}", ()
        return True


def _to_logging(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None,
    line: str | None = None,
) -> None:
    text = warnings.formatwarning(message, category, filename, lineno, line)
    logging.getLogger("py.warnings").warning("%s", text)


@contextmanager
def collect_warnings() -> Iterator[Tally]:
    """Count the warnings (logged or Python's) raised inside the block; Python warnings also go to logging."""
    tally = Tally()
    root = logging.getLogger()
    root.addHandler(tally)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _to_logging
            yield tally
    finally:
        root.removeHandler(tally)


__all__ = ["ConsoleFilter", "Tally", "clean_message", "collect_warnings", "kind_of"]
