"""A finished study's results as tables, for a notebook: every CSV that ``cxrgen report`` wrote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


class ResultsNotFound(FileNotFoundError):
    """The study folder has no ``results/`` yet: ``cxrgen report STUDY_DIR`` writes it."""


def load_results(study_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every ``results/*.csv`` of a study folder, by file stem (``auc``, ``comparisons``, ``findings``, ...).

    Args:
        study_dir: The study folder (the study file's ``out``).

    Returns:
        ``{"auc": DataFrame, ...}`` in file-name order; column meanings are listed in the documentation's
        results reference.

    Raises:
        ResultsNotFound: ``study_dir/results`` does not exist or holds no CSV file.
    """
    folder = Path(study_dir) / "results"
    tables = {path.stem: pd.read_csv(path) for path in sorted(folder.glob("*.csv"))}
    if not tables:
        raise ResultsNotFound(f"{folder}: no results tables; run `cxrgen report {study_dir}` first")
    return tables
