"""Checks of a study's test sets against its splits, run by ``prepare`` so that an empty test set is found
before any training, not as ``prediction covered 0 of 0 images`` after it."""

from __future__ import annotations

import pandas as pd

from cxrgen.errors import CxrgenError
from cxrgen.study.config import StudyConfig


class EmptyTestSetError(CxrgenError, ValueError):
    """A configured test set without an image; the message names the configuration, the test set and why."""


def check_test_sets(config: StudyConfig, splits: pd.DataFrame, excluded: pd.DataFrame | None = None) -> None:
    """Refuse a configured test set with no test image (after excluded images, when given).

    Args:
        config: the study.
        splits: ``splits.parquet`` rows (``image_id, dataset, split``).
        excluded: ``excluded.csv`` rows; their images do not count.
    """
    test = splits.loc[splits["split"] == "test", ["image_id", "dataset"]]
    lost = test["image_id"].isin(set(excluded["image_id"])) if excluded is not None else pd.Series(False, test.index)
    images = test.groupby("dataset").size()
    kept = test.loc[~lost].groupby("dataset").size()
    for conf in config.configurations:
        for test_set in conf.test_sets():
            if sum(int(kept.get(ds, 0)) for ds in test_set.datasets):
                continue
            found = ", ".join(f"{ds}: {int(images.get(ds, 0))}" for ds in test_set.datasets) or "it names none"
            why = (
                "all of them failed to decode (see excluded.csv)"
                if sum(int(images.get(ds, 0)) for ds in test_set.datasets)
                else "check the split method and its test fraction, or the official split file"
            )
            raise EmptyTestSetError(
                f"configuration {conf.name!r}, test set {test_set.name!r} ({test_set.kind}): no test images "
                f"(test-split images per dataset: {found}); {why}"
            )
