"""The base of every error cxrgen raises for bad input: the CLI prints these as one line and exits non-zero."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic is imported by the models that raise it, not by every module importing this one
    from pydantic import ValidationError


class CxrgenError(Exception):
    """Bad input or state that a user can fix; the message names the file, row, column or key."""


#: Tags of the study file's tagged unions (``study.config.ArchitectureEntry``), left out of error locations.
UNION_TAGS = frozenset({"probe", "external"})


def validation_errors(exc: ValidationError, prefix: str = "") -> str:
    """One line for a pydantic model's errors: ``key: unknown key`` or ``key: <pydantic's message>``, joined by ``; ``.

    ``prefix`` is where the model sits in its file (``datasets.nih.``); an error of the whole model is named by
    the prefix alone, or ``(top level)``.
    """
    parts = []
    for err in exc.errors():
        # A tagged union adds its tag to the location (``x.probe.mode``); the user's file has no such key.
        key = ".".join(str(p) for p in err["loc"] if p not in UNION_TAGS)
        where = f"{prefix}{key}" if key else (prefix.rstrip(".") or "(top level)")
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
