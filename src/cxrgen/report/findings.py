"""The study's claims as tested statements, for the top of the report: ``findings.csv``.

Each claim of the paper becomes rows with an effect size, its patient-clustered interval, the Holm-adjusted p of
its family (:mod:`cxrgen.report.comparisons`) and a verdict at ``alpha``:

1. ``internal_above_external``: a model's internal AUC is above its external AUC (per label; the overall line
   counts the labels). Supported when the gap is positive and Holm p <= alpha, contradicted when negative and
   Holm p <= alpha, otherwise inconclusive.
2. ``union_beats_single``: training on the union raises external AUC over each single source (same rule).
3. ``architectures_alike``: the architectures perform alike. Equivalence is decided first (DESIGN.md section 9),
   by two one-sided tests at ``alpha`` against +-``EQUIVALENCE_MARGIN`` (an equivalence statement needs a
   margin; 0.02 AUC is the smallest difference the paper discusses): supported when the (1 - 2 alpha) interval
   of the difference, i.e. the 90 % interval at alpha = 0.05, lies within the margin (Schuirmann 1987, J
   Pharmacokinet Biopharm 15:657-680). The interval is the Wald interval ``difference +- z_{1-alpha} se`` on the
   comparison's bootstrap standard error, the same normal approximation as its p-value. Only when equivalence
   is not shown: contradicted when they differ (Holm p <= alpha), otherwise inconclusive. A difference of 0.008
   that is significant but whose 90 % interval lies inside +-0.02 is equivalent, not contradicted.
4. ``next_hospital``: with three or more external hospitals, the pooled external AUC and the 95 % prediction
   interval per label (:mod:`cxrgen.metrics.meta_analysis`); an estimate, so no verdict.

The paper's own difference sits beside ours (``paper``) where ``reference`` holds both of its AUCs. A statement
resting on a run without ``done.json`` says so: ``unfinished`` is True and its comparison ends in "(unfinished)".
"""

from __future__ import annotations

import math
from collections.abc import Collection

import pandas as pd
from scipy.stats import norm

from cxrgen.report.tables import UNFINISHED, reference_auc
from cxrgen.study.config import StudyConfig

EQUIVALENCE_MARGIN = 0.02
#: The verdict of a statement without an AUC on one side (an unlabelled test set, a label with one class).
NOT_ESTIMABLE = "not estimable (no AUC on one side)"

FINDINGS_COLUMNS: tuple[str, ...] = (
    "claim", "comparison", "label", "effect", "ci_low", "ci_high", "p_holm", "verdict", "paper", "unfinished",
)

CLAIMS: dict[str, str] = {
    "internal_above_external": "Internal AUC is above external AUC",
    "union_beats_single": "Training on the union raises external AUC over a single source",
    "architectures_alike": f"The architectures perform alike (difference within +-{EQUIVALENCE_MARGIN:g} AUC)",
    "next_hospital": "Expected AUC at a new hospital (random-effects meta-analysis)",
}


def _directional(diff: float, p_holm: float, alpha: float) -> str:
    if math.isnan(p_holm) or math.isnan(diff):
        return "inconclusive"
    if p_holm <= alpha:
        return "supported" if diff > 0 else "contradicted"
    return "inconclusive"


def equivalence_interval(diff: float, se: float, alpha: float = 0.05) -> tuple[float, float]:
    """The (1 - 2 alpha) Wald interval of a difference: inside +-margin iff both one-sided tests reject at alpha."""
    half = float(norm.ppf(1.0 - alpha)) * se
    return diff - half, diff + half


def _alike(diff: float, se: float, p_holm: float, alpha: float) -> str:
    low, high = equivalence_interval(diff, se, alpha)
    if not (math.isnan(low) or math.isnan(high)) and low >= -EQUIVALENCE_MARGIN and high <= EQUIVALENCE_MARGIN:
        return "supported"  # equivalence first (two one-sided tests), before any difference test
    if not math.isnan(p_holm) and p_holm <= alpha:
        return "contradicted"
    return "inconclusive"


def _paper_gap(config: StudyConfig, row: pd.Series, label: str) -> float:
    a = reference_auc(config, row["configuration_a"], row["arch_a"], row["test_set_a"],
                      "internal" if row["test_set_a"] == "internal" else "external")
    b = reference_auc(config, row["configuration_b"], row["arch_b"], row["test_set_b"],
                      "internal" if row["test_set_b"] == "internal" else "external")
    return a[label] - b[label] if label in a and label in b else math.nan


def _marked(what: str, unfinished: bool) -> str:
    return f"{what} ({UNFINISHED})" if unfinished else what


def findings(
    config: StudyConfig,
    comparisons: pd.DataFrame,
    next_hospital: pd.DataFrame,
    *,
    alpha: float = 0.05,
    unfinished_runs: Collection[tuple[str, str]] = (),
) -> pd.DataFrame:
    """All claims as rows with :data:`FINDINGS_COLUMNS`, claims in the order of :data:`CLAIMS`.

    ``unfinished_runs`` are the (configuration, arch) pairs with an unfinished run; they mark the next-hospital
    rows (comparison rows carry their own ``unfinished`` column).
    """
    rows: list[dict[str, object]] = []
    family_claim = {"internal_vs_external": "internal_above_external", "multi_vs_single": "union_beats_single",
                    "architectures": "architectures_alike"}
    for family, claim in family_claim.items():
        part = comparisons[comparisons["family"] == family]
        for _, r in part.iterrows():
            diff, low, high, p_holm = (float(r[c]) for c in ("difference", "ci_low", "ci_high", "p_holm"))
            if family == "internal_vs_external":
                what = f"{r['configuration_a']}/{r['arch_a']}: internal vs {r['test_set_b']}"
            elif family == "multi_vs_single":
                what = f"{r['configuration_a']} vs {r['configuration_b']} ({r['arch_a']}, {r['test_set_a']})"
            else:
                what = f"{r['arch_a']} vs {r['arch_b']} ({r['configuration_a']}, {r['test_set_a']})"
            se = float(r["se"]) if "se" in r else math.nan
            verdict = _alike(diff, se, p_holm, alpha) if claim == "architectures_alike" else _directional(
                diff, p_holm, alpha)
            if math.isnan(diff):  # an unlabelled set or a one-class label: no AUC to compare, not "inconclusive"
                verdict = NOT_ESTIMABLE
            unfinished = bool(r.get("unfinished", False))
            rows.append({"claim": claim, "comparison": _marked(what, unfinished), "label": r["label"],
                         "effect": diff, "ci_low": low, "ci_high": high, "p_holm": p_holm, "verdict": verdict,
                         "paper": _paper_gap(config, r, str(r["label"])), "unfinished": unfinished})
    for _, r in next_hospital.iterrows():
        unfinished = (r["configuration"], r["arch"]) in set(unfinished_runs)
        what = f"{r['configuration']}/{r['arch']} on {r['k']} hospitals ({r['hospitals']})"
        rows.append({"claim": "next_hospital", "comparison": _marked(what, unfinished), "label": r["label"],
                     "effect": r["pooled_auc"], "ci_low": r["pi_low"], "ci_high": r["pi_high"], "p_holm": math.nan,
                     "verdict": r["note"] or "estimate", "paper": math.nan, "unfinished": unfinished})
    return pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS))


def claim_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One line per claim: how many of its statements are supported, contradicted, inconclusive, not estimable.

    The next-hospital claim is an estimate, not a test: its estimable rows count under ``estimated``. Statements
    resting on an unfinished run are also counted under ``unfinished``.
    """
    out = []
    for claim, text in CLAIMS.items():
        part = table[table["claim"] == claim]
        counts = part["verdict"].value_counts()
        not_estimable = int(part["verdict"].str.startswith("not estimable").sum())
        out.append({"claim": text, "statements": len(part), "supported": int(counts.get("supported", 0)),
                    "contradicted": int(counts.get("contradicted", 0)),
                    "inconclusive": int(counts.get("inconclusive", 0)),
                    "estimated": int(counts.get("estimate", 0)), "not estimable": not_estimable,
                    "unfinished": int(part["unfinished"].astype(bool).sum())})
    return pd.DataFrame(out)
