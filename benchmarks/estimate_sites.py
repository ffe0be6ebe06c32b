"""How well the label-free estimates and their trust flag did on a finished study's labelled external sets.

Reads ``results/estimates.csv`` (``cxrgen report`` with ``evaluation.estimate.labelled: true``) and prints

* per method and for the two baselines (``internal_auc``, ``other_hospitals_auc``): folds, the AUC estimate's mean
  absolute error and 90th percentile, interval coverage, the noise floor the truth's own standard error sets, and
  the flag's hit rate on errors above 0.05 and false-alarm rate on the others (``estimates_summary.csv``, the
  report's own :func:`cxrgen.report.estimates.summary_table`);
* per signal of the flag, alone at its limit, the same hit and false-alarm rates (on CBPE's errors; the flag is
  shared by every method of a fold and label), so a limit can be tuned; ``expected_se`` (not in the flag) at
  :data:`~cxrgen.shift.estimates.SMALL_TARGET_SE`;
* the same rates counting only errors beyond the truth's noise (above 0.05 and above 1.96 ``true_se``).

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/estimate_sites.py STUDY_DIR [--method cbpe]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cxrgen.report.estimates import BIG_ERROR, SIGNALS, summary_table
from cxrgen.shift.estimates import (
    MAX_EMBEDDING_AUC,
    MAX_OUTSIDE,
    MAX_PREVALENCE_ODDS,
    MAX_SCORE_SHIFT,
    MAX_SPREAD,
    SMALL_TARGET_SE,
)

LIMITS = dict(zip(SIGNALS, (MAX_SPREAD, MAX_PREVALENCE_ODDS, MAX_OUTSIDE, MAX_SCORE_SHIFT, SMALL_TARGET_SE,
                              MAX_EMBEDDING_AUC),
                  strict=True))  # fmt: skip


def _rates(flagged: pd.Series, big: pd.Series) -> dict[str, object]:
    return {"hit_rate": flagged[big].mean() if big.any() else float("nan"),
            "false_alarm_rate": flagged[~big].mean() if (~big).any() else float("nan"),
            "flag_rate": flagged.mean(), "n_big": int(big.sum()), "n": len(big)}  # fmt: skip


def signal_table(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per signal alone, and the flag, hit and false-alarm rates on ``method``'s AUC errors (plain and beyond the
    truth's noise)."""
    auc = table.loc[(table["metric"] == "auc") & (table["method"] == method) & table["error"].notna()]
    err = auc["error"].abs()
    big = err > BIG_ERROR
    beyond = big & (err > 1.96 * auc["true_se"].fillna(0.0))
    candidates = {f"{s} > {limit}": auc[s] > limit for s, limit in LIMITS.items()}
    candidates["flag (any of them)"] = auc["flag"].astype(bool)
    rows = []
    for name, flagged in candidates.items():
        plain = _rates(flagged, big)
        noise = _rates(flagged, beyond)
        beyond_noise = {"hit_rate_beyond_noise": noise["hit_rate"], "false_alarm_beyond_noise":
                        noise["false_alarm_rate"], "n_beyond_noise": noise["n_big"]}  # fmt: skip
        rows.append({"rule": name, **plain, **beyond_noise})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--method", default="cbpe", help="whose errors the per-signal rates count")
    args = parser.parse_args()
    table = pd.read_csv(args.study_dir / "results" / "estimates.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(f"per method, AUC over labelled folds and labels (big error: > {BIG_ERROR})")
        print(summary_table(table).to_string(index=False))
        print(f"\nper signal alone, on {args.method}'s errors")
        print(signal_table(table, args.method).to_string(index=False))


if __name__ == "__main__":
    main()
