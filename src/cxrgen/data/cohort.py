"""Who is in each dataset and split: the content of the paper's Figures 1 and 4-6 as a table."""

from __future__ import annotations

import numpy as np
import pandas as pd


def describe(
    manifest: pd.DataFrame, splits: pd.DataFrame | None, labels: list[str], notes: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per (dataset, split) and one per dataset total: images, patients, sex %, age, positives per label.

    Positives count targets equal to 1 after the uncertainty policy (the paper's label totals); a label the
    dataset does not record at all (NaN throughout, e.g. Edema in VinBigData) shows no count rather than 0.
    ``unlabelled`` counts images without a label row (MIMIC studies missing from the label file), which no
    policy makes negative. ``notes`` (:func:`cxrgen.data.manifest.reading_notes`) add one row per reader note after
    the dataset's total: ``split`` is ``left out`` (``images`` = metadata rows that never reached the manifest,
    e.g. PadChest's null ``Labels``) or ``note`` (e.g. VinDr-CXR's images without patient ids), ``note`` says why.
    """
    frame = manifest
    if splits is not None:
        frame = manifest.merge(splits[["image_id", "split"]], on="image_id", how="left", validate="one_to_one")
    else:
        frame = manifest.assign(split="all")
    rows = []
    for dataset, part in frame.groupby("dataset", sort=False):
        groups = [*part.groupby("split", sort=False)] if splits is not None else []
        order = {"train": 0, "val": 1, "test": 2}
        groups.sort(key=lambda item: order.get(str(item[0]), 9))
        for split, group in [*groups, ("all", part)]:
            sex = group["sex"].value_counts(normalize=True) * 100
            # Shares of all images (unknown is the rest); undefined, not 0, where no image records a sex.
            recorded = bool(group["sex"].isin(["M", "F"]).any())
            row: dict[str, object] = {
                "dataset": dataset,
                "split": split,
                "images": len(group),
                "patients": group["patient_id"].nunique(),
                "male_pct": round(float(sex.get("M", 0.0)), 1) if recorded else np.nan,
                "female_pct": round(float(sex.get("F", 0.0)), 1) if recorded else np.nan,
                "age_mean": round(float(group["age"].mean()), 1),
                "age_sd": round(float(group["age"].std()), 1),
            }
            for label in labels:
                row[label] = int((group[label] == 1).sum()) if group[label].notna().any() else None
            if "labelled" in group:
                row["unlabelled"] = int((~group["labelled"].astype(bool)).sum())  # no label row: targets NaN
            rows.append(row)
        if notes is not None:
            for note in notes.loc[notes["dataset"] == dataset].itertuples(index=False):
                rows.append({"dataset": dataset, "split": note.kind, "images": int(note.rows), "note": note.note})
    table = pd.DataFrame(rows)
    counts = ["images", "patients", *labels, *(["unlabelled"] if "unlabelled" in table else [])]
    table[counts] = table[counts].astype("Int64")  # counts stay integers beside the note rows' blanks
    if "note" in table:
        table["note"] = table["note"].fillna("")
    return table
