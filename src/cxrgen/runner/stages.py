"""The names of ``prepare``'s stages, in order: free of pandas, so the CLI builds ``--until``'s choices at once."""

from __future__ import annotations

from typing import Literal

Stage = Literal["manifest", "splits", "verify", "cache"]
STAGES: tuple[Stage, ...] = ("manifest", "splits", "verify", "cache")
