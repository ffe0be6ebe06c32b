"""The shift-aware sections of ``report.html`` (issue 11): one function per analysis, as ``sections.py`` does.

Each section arranges one frame of :class:`~cxrgen.report.shift_tables.ShiftTables` into a compact table under
its own ``<h3>``; the full rows are in the six CSVs. No function here recomputes a number.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd

from cxrgen.report.html import frame_html
from cxrgen.report.pvalues import bootstrap_p_text
from cxrgen.report.shift_tables import RUN_KEYS, SHORTCUT_LABEL, ShiftTables, with_seed
from cxrgen.shift.shortcut import MIN_NEGATIVES


def shift_html(shift: ShiftTables, ci: float) -> str:
    """The shift sections: one ``<h2>``, the notes on what was skipped, then one ``<h3>`` per analysis."""
    t = shift.tables
    parts = [
        '<h2 id="shift">Shift-aware evaluation</h2>',
        f"<p>Thresholds and temperatures are fitted on each run's validation set and applied unchanged to "
        f"every test set. Intervals: {ci * 100:g} % patient-clustered bootstrap. Full tables: protocols.csv, "
        "operating_points.csv, calibration_shift.csv, subgroups.csv, shortcut.csv, borderline.csv.</p>",
        *(f'<p class="note">{html.escape(note)}</p>' for note in shift.notes),
        shortcut(t["shortcut"]),
        operating_points(t["operating_points"]),
        calibration_shift(t["calibration_shift"]),
        subgroups(t["subgroups"]),
        protocols(t["protocols"]),
        borderline(t["borderline"], shift.review),
    ]
    return "\n".join(parts)


def shortcut(table: pd.DataFrame) -> str:
    """False-positive rate among negatives with and without a device; rows with the shortcut highlighted."""

    def body(sc: pd.DataFrame) -> list[str]:
        shown = sc.loc[sc["label"] == SHORTCUT_LABEL].copy()
        sources = ", ".join(sorted(set(shown["device_source"].astype(str))))
        shown["verdict"] = ["detected" if d else (st if st != "ok" else "not detected")
                            for d, st in zip(shown["detected"], shown["status"], strict=True)]  # fmt: skip
        shown["FPR device"] = _interval(shown, "fpr_device", "fpr_device_low", "fpr_device_high")
        shown["FPR none"] = _interval(shown, "fpr_no_device", "fpr_no_device_low", "fpr_no_device_high")
        shown["difference"] = _interval(shown, "difference", "ci_low", "ci_high")
        columns = [*with_seed(shown, "configuration", "arch", "test_set"),
                   "n_neg_device", "FPR device", "FPR none", "difference", "verdict"]  # fmt: skip
        return [
            f"<p>{SHORTCUT_LABEL}, Youden threshold from validation; devices from {html.escape(sources)}; "
            f"highlighted: interval above 0 (shortcut detected); fewer than {MIN_NEGATIVES} negatives with or "
            "without a device: too few to say.</p>",
            frame_html(shown[columns], shown["detected"].astype(bool).tolist()),
        ]

    return _section(
        "Device shortcut (false-positive rate among negatives, device vs none)",
        table,
        "no test set records devices, or no validation predictions",
        body,
    )


def operating_points(table: pd.DataFrame) -> str:
    """Sensitivity on every test set at the threshold that gave 90 % sensitivity on validation."""

    def body(op: pd.DataFrame) -> list[str]:
        sens = op.loc[(op["rule"] == "sensitivity90") & (op["metric"] == "sensitivity")].copy()
        sens["sensitivity"] = _interval(sens, "value", "ci_low", "ci_high")
        return [
            "<p>Sensitivity at the threshold that gave 90 % sensitivity on validation, per test set.</p>",
            frame_html(_per_test_set(sens, ["configuration", "arch", "label"], "test_set", "sensitivity")),
        ]

    return _section("Operating points chosen at home", table, "no validation predictions", body)


def calibration_shift(table: pd.DataFrame) -> str:
    """ECE before and after temperature scaling and EM prior-shift correction, with EM's prevalence."""

    def body(cal: pd.DataFrame) -> list[str]:
        keys = with_seed(cal, "configuration", "arch", "test_set", "label")
        wide = cal.pivot_table(index=keys, columns="method", values="ece").reset_index()
        prevalences = ["train_prevalence", "estimated_prevalence", "true_prevalence"]
        prev = cal.loc[cal["method"] == "prior_shift", [*keys, *prevalences]]
        merged = wide.merge(prev, on=keys, how="left")
        merged = merged.rename(columns={"none": "ECE", "temperature": "ECE temp.", "prior_shift": "ECE EM"})
        return [
            "<p>ECE before and after temperature scaling and EM prior-shift correction (Saerens et al. "
            "2002); EM's prevalence is estimated from the predictions alone. AUC is unchanged by both "
            "(calibration_shift.csv).</p>",
            frame_html(merged),
        ]

    return _section("Calibration and prevalence shift", table, "no validation predictions", body)


def subgroups(table: pd.DataFrame) -> str:
    """AUC per subgroup and test set, for the shortcut label where the study has it (else the first label)."""

    def body(sub: pd.DataFrame) -> list[str]:
        label = SHORTCUT_LABEL if SHORTCUT_LABEL in set(sub["label"]) else sub["label"].iloc[0]
        shown = sub.loc[sub["label"] == label].copy()
        shown["AUC"] = [
            f"{a:.3f} [{lo:.3f}, {hi:.3f}]" if s == "ok" else "too few"
            for a, lo, hi, s in zip(shown["auc"], shown["ci_low"], shown["ci_high"], shown["status"], strict=True)
        ]
        return [
            f"<p>{html.escape(str(shown['label'].iloc[0]))} AUC per subgroup (fewer than 20 positives or "
            "negatives: too few). Internal-external gaps with Holm's adjustment per family are in "
            "subgroups.csv. NIH ChestX-ray14 records no devices, so it has no device subgroup.</p>",
            frame_html(_per_test_set(shown, ["configuration", "arch", "family", "subgroup"], "test_set", "AUC")),
        ]

    return _section("Subgroups", table, "none", body)


def protocols(table: pd.DataFrame) -> str:
    """AUC under each label protocol minus AUC under the study's own (the first 40 rows; all in the CSV)."""

    def body(pr: pd.DataFrame) -> list[str]:
        shown = pr.copy()
        shown["protocol - study"] = _interval(shown, "difference", "ci_low", "ci_high")
        wide = _per_test_set(shown, ["configuration", "arch", "test_set", "label"], "protocol", "protocol - study")
        return [
            "<p>AUC under each protocol minus AUC under the study's own, paired patient bootstrap. The mimic_* "
            "protocols re-read MIMIC's other label files and score MIMIC test sets only (blank elsewhere).</p>",
            frame_html(wide.head(40)),
        ]

    return _section("Label protocols (same predictions, re-scored)", table, "no protocols configured", body)


def borderline(table: pd.DataFrame, review: pd.DataFrame | None) -> str:
    """Cardiomegaly error rate by distance of the true CTR from 0.5, and the images nearest the borderline.

    Only synthetic datasets know the true ratio (``truth.parquet``): without one the analysis is omitted, heading
    included, and the shift notes say in one line why (nothing truth-based appears on real data).
    """
    if table.empty:
        return ""

    def body(bl: pd.DataFrame) -> list[str]:
        shown = bl.copy()
        shown["error rate"] = _interval(shown, "error_rate", "ci_low", "ci_high")
        wide = _per_test_set(shown, ["configuration", "arch", "test_set"], "band", "error rate")
        run_keys = with_seed(bl, *RUN_KEYS[:3])
        slopes = bl.drop_duplicates(run_keys)[[*run_keys, "slope", "slope_low", "slope_high", "p", "n_boot"]]
        slopes["p"] = [bootstrap_p_text(p, n) for p, n in zip(slopes["p"], slopes.pop("n_boot"), strict=True)]
        parts = [
            "<p>Cardiomegaly error rate by |CTR - 0.5| band; a negative slope means errors concentrate "
            "near the borderline.</p>",
            frame_html(wide.merge(slopes, on=run_keys)),
        ]
        if review is not None:
            parts += [
                "<p>Misclassified external images closest to the borderline: true CTR beside both "
                "models' probabilities.</p>",
                frame_html(review),
            ]
        return parts

    return _section(
        "Borderline errors against the true cardiothoracic ratio",
        table,
        "No true cardiothoracic ratio is known for these datasets (real data): not tested.",
        body,
        bare=True,
    )


def _section(
    title: str, table: pd.DataFrame, absent: str, body: Callable[[pd.DataFrame], list[str]], bare: bool = False
) -> str:
    """One analysis: its ``<h3>``, then why there is nothing where ``table`` is empty, else ``body(table)``.

    ``absent`` is shown in parentheses (a placeholder), or as written where ``bare`` (a sentence of its own).
    """
    reason = f"<p>{absent}</p>" if bare else f"<p>({absent})</p>"
    return "\n".join([f"<h3>{title}</h3>", *([reason] if table.empty else body(table))])


def _per_test_set(frame: pd.DataFrame, index: list[str], columns: str, values: str) -> pd.DataFrame:
    """One row per run key in ``index`` (and seed, where the rows carry one), one column per ``columns`` value."""
    wide = frame.pivot_table(index=with_seed(frame, *index), columns=columns, values=values, aggfunc="first")
    return wide.reset_index()


def _interval(frame: pd.DataFrame, value: str, low: str, high: str) -> pd.Series:
    """``value [low, high]`` per row, three decimals; empty where the value is NaN."""
    return frame.apply(
        lambda r: f"{r[value]:.3f} [{r[low]:.3f}, {r[high]:.3f}]" if r[value] == r[value] else "", axis=1
    )
