"""Warnings as a user reads them (issue 26): one line per kind with a count, no source file or line."""

from __future__ import annotations

import io
import logging
import warnings

from cxrgen.utils.notes import ConsoleFilter, collect_warnings


class DemoWarning(UserWarning):
    pass


def test_kinds_are_counted_once_each_without_paths() -> None:
    with collect_warnings() as tally:
        for label in ("Edema", "Atelectasis", "Cardiomegaly"):
            warnings.warn(f"AUC undefined for {label!r}: 0 positive and 15 negative images", DemoWarning,
                          stacklevel=1)
        logging.getLogger("cxrgen.test").warning("test set %r of run %s is missing", "gamma", "a/b")
        logging.getLogger("cxrgen.test").warning("test set %r of run %s is missing", "delta", "a/c")
    assert tally.total == 5
    assert tally.lines() == [
        "3 x DemoWarning: AUC undefined for 'Edema': 0 positive and 15 negative images (first of 3 alike)",
        "2 x test: test set 'gamma' of run a/b is missing (first of 2 alike)",
    ]
    frame = tally.frame()
    assert frame["count"].tolist() == [3, 2] and not frame["message"].str.contains(r"\.py").any()


def test_console_shows_the_first_of_each_kind_without_source() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ConsoleFilter())
    logger = logging.getLogger("py.warnings")
    logger.addHandler(handler)
    try:
        with collect_warnings():
            for label in ("A", "B"):
                warnings.warn(f"undefined for {label!r}", DemoWarning, stacklevel=1)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "DemoWarning: undefined for 'A'\n"
