"""The TRIPOD+AI checklist (Collins et al., BMJ 2024;385:e078378), filled from what the study computed.

Every one of the checklist's 52 sub-items (27 items) is one row of ``results/tripod_ai.csv``: ``filled`` where the
study's own files answer it (data sources with file hashes and dates, the cohort flow, preprocessing, the outcome
definition, sample size against interval-width targets, missing data, partitioning and leakage checks, model
specification, performance, thresholds, subgroups, heterogeneity, the development-versus-evaluation shift), ``to
write`` where only the authors know the answer (context, ethics, funding, interpretation). Wording follows CLAIM
2024 where the two differ: "reference standard" for the outcome labels, "internal/external testing" for
evaluation. The item texts are short forms; the published checklist has the full wording.

Nothing here recomputes a statistic: AUC and calibration intervals come from ``auc.csv`` and ``calibration.csv``;
this module only counts rows of the manifest, hashes files and arranges text.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

import cxrgen
from cxrgen.errors import CxrgenError
from cxrgen.report.inputs import Predictions, StudyInputs
from cxrgen.study.config import DatasetConfig, StudyConfig
from cxrgen.utils.fileio import parquet_metadata, sha256_of

FILLED, TO_WRITE = "filled", "to write"
#: Common precision targets (full width of the interval): AUC 0.1; calibration slope and observed/expected 0.2.
TARGET_AUC_WIDTH = 0.1
TARGET_SLOPE_WIDTH = 0.2
TARGET_OE_WIDTH = 0.2
TRIPOD_COLUMNS: tuple[str, ...] = ("item", "sub_item", "section", "topic", "status", "content", "link")
SAMPLE_SIZE_COLUMNS: tuple[str, ...] = (
    "configuration", "arch", "test_set", "kind", "label", "n_pos", "n_neg", "auc_width", "slope_width",
    "oe_width", "auc_target_met", "slope_target_met", "oe_target_met",
)  # fmt: skip
#: Metadata tables hashed as data sources (a dataset root's tables, not its images).
_TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".json", ".parquet", ".xlsx")
_MAX_ENTRIES = 5000  # entries looked at per folder: image folders hold 10^5 files; tables sit near the root
_PACKAGES = ("torch", "lightning", "timm", "numpy", "pandas", "scikit-learn", "scipy", "statsmodels")

#: (sub-item, paper section, topic, short wording) for all 52 sub-items, in the checklist's order.
CHECKLIST: tuple[tuple[str, str, str, str], ...] = (
    ("1", "Title", "Title", "Identify the study as developing or evaluating a prediction model, the target "
     "population and the outcome."),
    ("2", "Abstract", "Abstract", "See TRIPOD+AI for Abstracts."),
    ("3a", "Introduction", "Background", "Healthcare context and rationale, references to existing models."),
    ("3b", "Introduction", "Background", "Target population, intended purpose in the care pathway, intended users."),
    ("3c", "Introduction", "Background", "Known health inequalities between sociodemographic groups."),
    ("4", "Introduction", "Objectives", "Study objectives: development, evaluation (internal/external testing) "
     "or both."),
    ("5a", "Methods", "Data", "Sources of data, separately for development and evaluation; rationale and "
     "representativeness."),
    ("5b", "Methods", "Data", "Dates of the collected participant data (start and end of accrual, follow-up)."),
    ("6a", "Methods", "Participants", "Study setting, number and location of centres."),
    ("6b", "Methods", "Participants", "Eligibility criteria."),
    ("6c", "Methods", "Participants", "Treatments received and how they were handled."),
    ("7", "Methods", "Data preparation", "Pre-processing and quality checking, and whether similar across "
     "sociodemographic groups."),
    ("8a", "Methods", "Outcome", "Outcome (reference standard): definition, time horizon, how and when assessed, "
     "consistency across groups."),
    ("8b", "Methods", "Outcome", "Qualifications and demographics of the outcome assessors (subjective "
     "interpretation)."),
    ("8c", "Methods", "Outcome", "Actions to blind the outcome assessment."),
    ("9a", "Methods", "Predictors", "Choice of initial predictors and any pre-selection."),
    ("9b", "Methods", "Predictors", "Definition of all predictors, how and when measured."),
    ("9c", "Methods", "Predictors", "Qualifications and demographics of predictor assessors."),
    ("10", "Methods", "Sample size", "How the study size was arrived at, separately for development and "
     "evaluation; justification that it suffices."),
    ("11", "Methods", "Missing data", "How missing data were handled; reasons for omitting data."),
    ("12a", "Methods", "Analytical methods", "How the data were used, including partitioning (and leakage)."),
    ("12b", "Methods", "Analytical methods", "How predictors were handled (rescaling, transformation, "
     "standardisation)."),
    ("12c", "Methods", "Analytical methods", "Type of model, rationale, model-building steps, hyperparameter "
     "tuning, internal validation."),
    ("12d", "Methods", "Analytical methods", "Heterogeneity of model performance across clusters (hospitals)."),
    ("12e", "Methods", "Analytical methods", "Measures and plots of performance (discrimination, calibration, "
     "clinical utility), model comparisons."),
    ("12f", "Methods", "Analytical methods", "Model updating (e.g., recalibration) arising from the evaluation."),
    ("12g", "Methods", "Analytical methods", "For evaluation, how the model predictions were calculated."),
    ("13", "Methods", "Class imbalance", "Class imbalance methods, why and how, and any recalibration."),
    ("14", "Methods", "Fairness", "Approaches to address model fairness and their rationale."),
    ("15", "Methods", "Model output", "Output of the model (probabilities, classification); thresholds and how "
     "they were identified."),
    ("16", "Methods", "Training versus evaluation", "Differences between development and evaluation data in "
     "setting, eligibility, outcome and predictors."),
    ("17", "Methods", "Ethical approval", "Ethics committee approval and informed consent or its waiver."),
    ("18a", "Open science", "Funding", "Source of funding and role of the funders."),
    ("18b", "Open science", "Conflicts of interest", "Conflicts of interest and financial disclosures."),
    ("18c", "Open science", "Protocol", "Where the protocol can be accessed, or that none was prepared."),
    ("18d", "Open science", "Registration", "Registration (register name and number), or that none was made."),
    ("18e", "Open science", "Data sharing", "Availability of the study data."),
    ("18f", "Open science", "Code sharing", "Availability of the analytical code."),
    ("19", "Open science", "Patient and public involvement", "Patient and public involvement, or none."),
    ("20a", "Results", "Participants", "Flow of participants, with and without the outcome; a diagram may help."),
    ("20b", "Results", "Participants", "Characteristics overall and per data source: dates, predictors, "
     "demographics, sample size, outcome events, missing data."),
    ("20c", "Results", "Participants", "For evaluation, comparison with the development data (demographics, "
     "predictors, outcome)."),
    ("21", "Results", "Model development", "Participants and outcome events in each analysis (development, "
     "tuning, evaluation)."),
    ("22", "Results", "Model specification", "Details of the full model to allow predictions and third-party "
     "evaluation; access restrictions."),
    ("23a", "Results", "Model performance", "Performance estimates with confidence intervals, including key "
     "subgroups."),
    ("23b", "Results", "Model performance", "Heterogeneity of performance across clusters, if examined."),
    ("24", "Results", "Model updating", "Results of any model updating and subsequent performance."),
    ("25", "Discussion", "Interpretation", "Overall interpretation, including fairness, in the context of the "
     "objectives and previous studies."),
    ("26", "Discussion", "Limitations", "Limitations (non-representative sample, sample size, overfitting, "
     "missing data) and their effects."),
    ("27a", "Discussion", "Usability", "How poor-quality or unavailable input data should be assessed and "
     "handled in use."),
    ("27b", "Discussion", "Usability", "Whether users interact with the input data or model, and the expertise "
     "required."),
    ("27c", "Discussion", "Usability", "Next steps for future research: applicability and generalisability."),
)  # fmt: skip

#: What the authors must add where the study cannot know it (sub-item -> hint).
_AUTHORS: dict[str, str] = {
    "1": "only the authors can title the paper",
    "2": "write the abstract (TRIPOD+AI for Abstracts)",
    "3a": "clinical context and the models this study builds on",
    "3b": "intended population, use in the care pathway and users",
    "3c": "known inequalities in the target population",
    "5b": "acquisition dates: the manifest records none (metadata file dates are under 5a)",
    "6a": "care setting and location of each centre",
    "6c": "treatments (usually not applicable to diagnostic radiograph labels)",
    "8b": "who made the reference standard (the labels) and their qualifications",
    "8c": "whether the reference standard was assessed blind to the images' predictions",
    "14": "fairness approach (subgroup performance is computed, see 23a)",
    "17": "ethics approval or waiver for every dataset used",
    "18a": "funding", "18b": "conflicts of interest", "18c": "protocol", "18d": "registration",
    "18e": "where the data can be obtained (licences of each dataset)",
    "19": "patient and public involvement",
    "25": "interpretation", "26": "limitations", "27a": "handling of poor-quality input in use",
    "27b": "user interaction and expertise", "27c": "next steps",
}  # fmt: skip


@dataclass(frozen=True)
class TripodInputs:
    """What the checklist reads, all computed by the report before it (no statistic is recomputed here)."""

    inputs: StudyInputs
    predictions: Sequence[Predictions]
    auc: pd.DataFrame
    calibration: pd.DataFrame
    next_hospital: pd.DataFrame
    shift: dict[str, pd.DataFrame]
    sample_size: pd.DataFrame
    development: pd.DataFrame


def sample_size_table(auc: pd.DataFrame, calibration: pd.DataFrame) -> pd.DataFrame:
    """Achieved interval widths per run, test set and label against :data:`TARGET_AUC_WIDTH` and the calibration
    targets (``results/sample_size.csv``). A NaN width (not estimable) meets no target."""
    keys = ["configuration", "arch", "test_set", "kind", "label", *(["seed"] if "seed" in auc else [])]
    a = auc.assign(auc_width=auc["ci_high"] - auc["ci_low"])[[*keys, "n_pos", "n_neg", "auc_width"]]
    c = calibration.assign(slope_width=calibration["slope_high"] - calibration["slope_low"],
                           oe_width=calibration["o_e_high"] - calibration["o_e_low"])  # fmt: skip
    table = a.merge(c[[*keys, "slope_width", "oe_width"]], on=keys, how="left")
    table["auc_target_met"] = table["auc_width"] <= TARGET_AUC_WIDTH
    table["slope_target_met"] = table["slope_width"] <= TARGET_SLOPE_WIDTH
    table["oe_target_met"] = table["oe_width"] <= TARGET_OE_WIDTH
    extra = [k for k in keys if k not in SAMPLE_SIZE_COLUMNS]
    return table[[*SAMPLE_SIZE_COLUMNS[:5], *extra, *SAMPLE_SIZE_COLUMNS[5:]]]


#: (configuration field, role in TRIPOD+AI/CLAIM wording), in the order roles are listed.
_ROLES = (("train", "development"), ("internal", "internal testing"), ("external", "external testing"))


def role_text(config: StudyConfig) -> dict[str, str]:
    """Dataset -> its roles in the study, each with the configurations it plays it in, in the configurations' order:
    roles played in the same configurations share one list (``development and internal testing: loo-nih,
    loo-mimic; external testing: loo-brax``); ``not used`` for a dataset no configuration names. Complete, yet
    short enough for a table cell of a many-configuration study (a leave-one-out design lists each name once per
    role set, not once per role and configuration)."""
    played: dict[str, dict[str, list[str]]] = {name: {} for name in config.datasets}
    for conf in config.configurations:
        for field, role in _ROLES:
            for name in getattr(conf, field):
                confs = played.setdefault(name, {}).setdefault(role, [])
                if conf.name not in confs:
                    confs.append(conf.name)
    out = {}
    for name, roles in played.items():
        groups: dict[tuple[str, ...], list[str]] = {}  # configurations -> the roles played in exactly those
        for _, role in _ROLES:
            if role in roles:
                groups.setdefault(tuple(roles[role]), []).append(role)
        out[name] = "; ".join(f"{' and '.join(r)}: {', '.join(c)}" for c, r in groups.items()) or "not used"
    return out


def development_table(inputs: StudyInputs) -> pd.DataFrame:
    """Development versus evaluation data, one row per dataset (``results/development_vs_evaluation.csv``):
    role, images, patients, observed prevalence per label (NaN: not recorded), age, sex, views, devices."""
    config, manifest = inputs.config, inputs.manifest
    roles = role_text(config)
    rows = []
    for name, part in manifest.groupby("dataset", sort=False):
        row: dict[str, object] = {
            "dataset": name,
            "role": roles.get(str(name), "not used"),
            "images": len(part),
            "patients": int(part["patient_id"].nunique()),
        }
        for label in config.labels:
            values = part[label] if label in part else pd.Series(dtype=float)
            row[f"prevalence_{label}"] = float(values.mean()) if values.notna().any() else np.nan
        age = pd.to_numeric(part["age"], errors="coerce")
        row["age_mean"], row["age_sd"] = round(float(age.mean()), 1), round(float(age.std()), 1)
        sex = part["sex"].astype(str).value_counts(normalize=True)
        recorded = bool(part["sex"].isin(["M", "F"]).any())  # none recorded: undefined, not 0 % female
        row["female_pct"] = round(100 * float(sex.get("F", 0.0)), 1) if recorded else np.nan
        views = part["view"].fillna("unknown").astype(str).value_counts(normalize=True)
        row["views"] = ", ".join(f"{v} {100 * share:.0f} %" for v, share in views.items())
        device = part["device"] if "device" in part else part.get("Support Devices")
        row["devices_pct"] = (round(100 * float(device.mean()), 1)
                              if device is not None and device.notna().any() else np.nan)  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def development_view(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`development_table` as ``report.html`` shows it: age as ``mean (SD)`` in one column, percentages to one
    decimal (the CSV keeps ``age_mean``, ``age_sd``, ``female_pct`` and ``devices_pct`` as numbers). One column
    fewer lets the table of a twelve-dataset, five-label study fit a 1280 px window with room for the role."""

    def one(value: object) -> str:
        number = pd.to_numeric(value, errors="coerce")
        return "" if pd.isna(number) else f"{float(number):.1f}"

    def age(mean: object, sd: object) -> str:
        m, s = one(mean), one(sd)
        return f"{m} ({s})" if m and s else m

    view = table.drop(columns=["age_mean", "age_sd", "female_pct", "devices_pct"], errors="ignore")
    at = list(view.columns).index("views") if "views" in view else len(view.columns)
    extra = {}
    if "age_mean" in table:
        sd = table["age_sd"] if "age_sd" in table else pd.Series(np.nan, index=table.index)
        extra["age, mean (SD)"] = [age(m, s) for m, s in zip(table["age_mean"], sd, strict=True)]
    if "female_pct" in table:
        extra["female %"] = [one(v) for v in table["female_pct"]]
    for name, values in extra.items():
        view.insert(at, name, values)
        at += 1
    if "devices_pct" in table:
        view["devices %"] = [one(v) for v in table["devices_pct"]]
    if "views" in view:  # "AP 48 %": the per cent sign stays with its number
        view["views"] = view["views"].astype(str).str.replace(" %", "\u00a0%", regex=False)
    return view


def tripod_checklist(t: TripodInputs) -> pd.DataFrame:
    """All 52 TRIPOD+AI sub-items with status ``filled`` or ``to write`` (``results/tripod_ai.csv``)."""
    filled = _filled(t)
    rows = []
    for sub_item, part, topic, wording in CHECKLIST:
        content, link = filled.get(sub_item, ("", ""))
        status = FILLED if content else TO_WRITE
        if not content:
            content = f"To write: {_AUTHORS.get(sub_item, 'only the authors know this')}."
        rows.append({"item": int("".join(ch for ch in sub_item if ch.isdigit())), "sub_item": sub_item,
                     "section": part, "topic": f"{topic}: {wording}", "status": status, "content": content,
                     "link": link})  # fmt: skip
    return pd.DataFrame(rows, columns=list(TRIPOD_COLUMNS))


def _filled(t: TripodInputs) -> dict[str, tuple[str, str]]:
    """sub-item -> (content, link to the report's section) for every sub-item the study answers."""
    inputs, config = t.inputs, t.inputs.config
    manifest = inputs.manifest
    roles = role_text(config)
    archs = list(dict.fromkeys([*config.architectures, *(p.arch for p in t.predictions)]))
    n_external = len({p.test_set for p in t.predictions if p.kind == "external"})
    train = config.train
    pre = config.preprocess
    out: dict[str, tuple[str, str]] = {}

    design = "; ".join(
        f"{c.name}: developed on {', '.join(c.train)}, internal testing on {', '.join(c.internal)}"
        + (f", external testing on {', '.join(c.external)}" if c.external else "")
        for c in config.configurations
    )
    out["4"] = (f"Development and testing of {len(archs)} architecture(s) ({', '.join(archs)}) in "
                f"{len(config.configurations)} configuration(s): {design}.", "#results")
    out["5a"] = ("; ".join(_source_text(inputs, str(name), roles.get(str(name), "not used"))
                           for name in config.datasets), "#cohort")  # fmt: skip
    dates = _date_range(manifest)
    if dates:
        out["5b"] = (dates, "#cohort")
    out["6b"] = (_flow_text(inputs), "#cohort")
    views = "all views" if config.views == "all" else f"views {', '.join(config.views)}"
    out["7"] = (
        f"Images decoded and checked (`cxrgen prepare --until verify`; {_count_excluded(inputs)} image(s) that "
        f"failed to decode excluded, excluded.csv); {views}; CLAHE {'on' if pre.clahe else 'off'} (engine "
        f"{pre.engine}); resized to each architecture's input side ("
        + ", ".join(f"{a} {config.input_size(a)} px" for a in archs if _known_size(config, a)) + "), the same "
        "pipeline for every image and sociodemographic group; augmentation: horizontal flip with probability "
        f"{train.flip:g} in training only.", "#cohort")  # fmt: skip
    out["8a"] = (_outcome_text(config), "#cohort")
    out["9a"] = ("The image's pixels only (no clinical or demographic predictors); every label is predicted from "
                 "the whole radiograph.", "")
    out["9b"] = (f"One radiograph per prediction, {views}, preprocessed as in 7; the image at acquisition time.", "")
    out["9c"] = ("Not applicable: the predictors are pixel values; no human reads them.", "")
    out["10"] = (_sample_size_text(t.sample_size), "sample_size.csv")
    out["11"] = (_missing_text(config, manifest), "#cohort")
    out["12a"] = (_partition_text(inputs), "#cohort")
    out["12b"] = (f"Pixels as uint8 after CLAHE ({'on' if pre.clahe else 'off'}), resized, then normalized with "
                  "each architecture's ImageNet mean and standard deviation; grey replicated to the model's "
                  "channels.", "")
    out["12c"] = (
        f"Convolutional networks from timm ({', '.join(archs)}), "
        f"{'ImageNet-pretrained' if train.pretrained else 'randomly initialised'}, one sigmoid output per label; "
        f"binary cross-entropy (NaN targets masked), Adam (lr {train.lr:g}, time decay {train.lr_decay:g}, epsilon "
        f"{train.epsilon:g}), batch {train.batch_size}, up to {train.max_epochs} epochs, early stopping on the "
        f"validation mean AUC (patience {train.patience}), best checkpoint kept; no hyperparameter tuning; seeds "
        f"{', '.join(map(str, train.seed_list()))}.", "#training-curves")
    out["12d"] = (
        "Random-effects meta-analysis (DerSimonian-Laird, statsmodels) of logit external AUCs with "
        "patient-clustered bootstrap variances: pooled AUC, tau², I², 95 % prediction interval for the next "
        f"hospital; needs 3 or more external hospitals (this study: {n_external}).", "#the-next-hospital")
    out["12e"] = (
        f"AUC-ROC per label with {config.evaluation.ci * 100:g} % patient-clustered bootstrap intervals "
        f"({config.evaluation.bootstrap} resamples, one resample per test set shared by all models); DeLong "
        "beside it; paired comparisons on the same images, Holm within each family; calibration: observed/"
        "expected, calibration slope and intercept (Wald intervals), Brier, ECE, reliability curves; sensitivity, "
        "specificity, PPV, NPV at validation-chosen thresholds; ROC curves.", "#calibration")
    recal = t.shift.get("calibration_shift", pd.DataFrame())
    out["12f"] = ("The models are not updated. " + (
        "Recalibration is examined, not applied: temperature scaling fitted on each run's validation set and "
        "prior-shift (EM) correction, in calibration_shift.csv." if not recal.empty else
        "No recalibration was examined (no validation predictions)."), "#shift")
    out["12g"] = (f"`cxrgen predict`: each run's best checkpoint (best.ckpt) on the preprocessed test images, "
                  f"sigmoid probabilities written per image (predictions/<test_set>.parquet); cxrgen "
                  f"{cxrgen.__version__}.", "")
    out["13"] = ("No class-imbalance method: unweighted binary cross-entropy, so the predicted probabilities keep "
                 "the development prevalence (calibration in 23a).", "")
    out["15"] = (_threshold_text(t.shift.get("operating_points", pd.DataFrame())), "#shift")
    out["16"] = (_shift_text(t.development, config), "#development-versus-evaluation-data")
    out["18f"] = (f"cxrgen {cxrgen.__version__}" + (f", commit {_commit()}" if _commit() else "") +
                  "; the resolved study file is results/config.yaml (the analysis reruns from it).", "")
    out["20a"] = (_flow_text(inputs, outcome=True), "#cohort")
    out["20b"] = ("Per dataset and split: images, patients, sex, age, positives per label (cohort.csv, the cohort "
                  "figures); missing data as in 11" + (f"; {dates}" if dates else "") + ".", "#cohort")
    out["20c"] = ("Development versus evaluation data per dataset: prevalence per label, age, sex, views, devices "
                  "(development_vs_evaluation.csv).", "#development-versus-evaluation-data")
    out["21"] = (_analysis_counts(inputs), "#cohort")
    out["22"] = (_model_text(t), "")
    out["23a"] = (
        f"{len(t.auc)} AUC estimates with intervals (auc.csv, Table 1), the first table's mean over labels, "
        f"calibration per run, test set and label (calibration.csv)"
        + (", subgroups by sex, age band and view with intervals (subgroups.csv)"
           if not t.shift.get("subgroups", pd.DataFrame()).empty else "") + ".", "#results")  # fmt: skip
    nh = t.next_hospital
    pooled = nh.dropna(subset=["pooled_auc"]) if "pooled_auc" in nh else nh.iloc[0:0]
    out["23b"] = ((f"Examined: {len(pooled)} pooled estimate(s) across external hospitals with tau², I² and "
                   "prediction intervals (next_hospital.csv).") if not pooled.empty else
                  f"Not estimable: {n_external} external test set(s); the meta-analysis needs 3 or more.",
                  "#the-next-hospital")  # fmt: skip
    out["24"] = ("No model was updated." + (" Recalibrated performance (temperature, prior shift) is in "
                                             "calibration_shift.csv." if not recal.empty else ""), "#shift")
    return out


def _known_size(config: StudyConfig, arch: str) -> bool:
    try:
        config.input_size(arch)
    except (CxrgenError, KeyError, ValueError):  # an architecture from elsewhere without a registry entry
        return False
    return True


def _tables(root: Path) -> Iterator[Path]:
    """Metadata tables in ``root`` and its direct subfolders (images are never hashed)."""
    if not root.is_dir():
        return
    folders = [root]
    for count, entry in enumerate(sorted(root.iterdir())):
        if count >= _MAX_ENTRIES:
            break
        if entry.is_dir():
            folders.append(entry)
    for folder in folders:
        with_entries = []
        for count, entry in enumerate(folder.iterdir()):
            if count >= _MAX_ENTRIES:
                break
            with_entries.append(entry)
        for entry in sorted(with_entries):
            if entry.is_file() and entry.name.lower().endswith(_TABLE_SUFFIXES):
                yield entry


def _source_text(inputs: StudyInputs, name: str, roles: str) -> str:
    spec = inputs.config.datasets[name]
    part = inputs.manifest.loc[inputs.manifest["dataset"] == name]
    files = []
    for path in list(_tables(Path(spec.root)))[:10]:
        when = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d")
        files.append(f"{path.relative_to(spec.root)} sha256 {sha256_of(path)[:16]} (file date {when})")
    return (f"{name} (reader {spec.reader}; {roles}): {len(part)} images of "
            f"{part['patient_id'].nunique()} patients; metadata "
            + ("; ".join(files) if files else "tables not found under the root") )  # fmt: skip


def _date_range(manifest: pd.DataFrame) -> str:
    for column in ("study_date", "date", "acquisition_date"):
        if column in manifest and manifest[column].notna().any():
            when = pd.to_datetime(manifest[column], errors="coerce")
            if when.notna().any():
                return f"images acquired {when.min():%Y-%m-%d} to {when.max():%Y-%m-%d} ({column})"
    return ""


def _count_excluded(inputs: StudyInputs) -> int:
    return 0 if inputs.excluded is None else len(inputs.excluded)


def _flow_text(inputs: StudyInputs, outcome: bool = False) -> str:
    """Per dataset: rows left out by the reader, images in the manifest, excluded, per split; with ``outcome``
    the positives and negatives per label in the test split."""
    manifest, splits, notes, excluded = inputs.manifest, inputs.splits, inputs.reading_notes, inputs.excluded
    frame = manifest if splits is None else manifest.merge(splits[["image_id", "split"]], on="image_id", how="left")
    parts = []
    for name, part in frame.groupby("dataset", sort=False):
        left = 0 if notes is None else int(notes.loc[(notes["dataset"] == name) & (notes["kind"] == "left out"),
                                                     "rows"].sum())  # fmt: skip
        gone = 0 if excluded is None else int((excluded["dataset"] == name).sum())
        reasons = "" if excluded is None or not gone else " (" + ", ".join(
            f"{r}: {n}" for r, n in excluded.loc[excluded["dataset"] == name, "reason"].value_counts().items()) + ")"
        text = (f"{name}: {left} metadata row(s) left out by the reader -> {len(part)} images of "
                f"{part['patient_id'].nunique()} patients -> {gone} excluded{reasons}")
        if "split" in part:
            counts = part.loc[~part["image_id"].isin([] if excluded is None else excluded["image_id"]), "split"]
            text += " -> " + ", ".join(f"{s} {n}" for s, n in counts.fillna("none").value_counts().items())
        if outcome and "split" in part:
            test = part.loc[part["split"] == "test"]
            per = [f"{lab} {int((test[lab] == 1).sum())}+/{int((test[lab] == 0).sum())}-"
                   for lab in inputs.config.labels if lab in test and test[lab].notna().any()]  # fmt: skip
            text += "; test outcome " + (", ".join(per) if per else "not recorded (unlabelled)")
        parts.append(text)
    return "Eligible: every image the reader returns for the study's views; " + "; ".join(parts) + "."


def _outcome_text(config: StudyConfig) -> str:
    def labeller(spec: DatasetConfig) -> str:
        options = spec.options()
        return str(options.get("labels") or options.get("labelled_by") or f"the {spec.reader} reader")

    labellers = "; ".join(f"{name}: {labeller(spec)}'s labels" for name, spec in config.datasets.items())
    policy = ", ".join(f"{lab} {config.uncertainty_for(lab)}" for lab in config.labels)
    return (f"Reference standard: presence of each of {', '.join(config.labels)} on the radiograph (diagnostic, "
            f"at acquisition), from each dataset's report-derived labels ({labellers}); uncertain mentions mapped "
            f"by policy ({policy}); blank (not mentioned) mapped to {config.blank}; a label a dataset never "
            "records is NaN and masked from loss and metrics.")


def _sample_size_text(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    per = table.groupby(["test_set", "label"], sort=False).agg(
        auc=("auc_width", "max"), slope=("slope_width", "max"), oe=("oe_width", "max"), n_pos=("n_pos", "min"))
    def width(value: float) -> str:
        return "not estimable" if pd.isna(value) else f"{value:.3f}"
    cells = [f"{t} {lab} ({int(r.n_pos) if not pd.isna(r.n_pos) else 0} positives): AUC {width(r.auc)}, slope "
             f"{width(r.slope)}, O/E {width(r.oe)}" for (t, lab), r in per.iterrows()]  # fmt: skip
    met = int(table["auc_target_met"].sum())
    return (f"No sample-size calculation; the sizes are those of the datasets. Achieved interval widths (widest "
            f"over models) per test set and label against targets AUC {TARGET_AUC_WIDTH:g}, calibration slope "
            f"{TARGET_SLOPE_WIDTH:g}, O/E {TARGET_OE_WIDTH:g}: " + "; ".join(cells) +
            f". AUC target met in {met} of {len(table)} estimates (sample_size.csv).")


def _missing_text(config: StudyConfig, manifest: pd.DataFrame) -> str:
    cells = []
    for column in ("patient_id", "sex", "age", "view", *config.labels):
        if column not in manifest:
            cells.append(f"{column} absent")
            continue
        values = manifest[column]
        missing = values.isna() | (values.astype(str).isin(["U", ""]) if column == "sex" else False)
        cells.append(f"{column} {int(missing.sum())}")
    return ("Missing per column (of " + str(len(manifest)) + " images): " + ", ".join(cells) + ". Handling: no "
            "imputation; a missing label (blank under the ignore policy, or never recorded) is masked from loss and "
            "metrics; missing age or sex leaves the image out of that subgroup only; images that failed to decode "
            "are excluded (6b).")


def _partition_text(inputs: StudyInputs) -> str:
    config, splits, manifest = inputs.config, inputs.splits, inputs.manifest
    methods = "; ".join(
        f"{name}: {spec.method}" + (f" {spec.fractions}, seed {spec.seed}" if spec.method == "random" else "")
        for name in config.datasets for spec in [config.split_for(name)])  # fmt: skip
    leakage = "splits not made"
    if splits is not None:
        joined = splits.merge(manifest[["image_id", "patient_id"]], on="image_id", how="left")
        shared = int((joined.groupby("patient_id")["split"].nunique() > 1).sum())
        leakage = ("patient-disjoint: no patient in two splits (checked on splits.parquet)" if shared == 0 else
                   f"{shared} patient(s) in more than one split (leakage)")  # fmt: skip
    return (f"Split by patient per dataset ({methods}); train for fitting, val for early stopping, thresholds and "
            f"temperatures, test for internal testing; external sets only tested. Leakage check: {leakage}.")


def _threshold_text(points: pd.DataFrame) -> str:
    base = "Output: one probability per label (sigmoid). "
    if points.empty or "threshold" not in points:
        return base + "No classification thresholds (no validation predictions to choose them on)."
    rules = ", ".join(sorted(set(points["rule"].astype(str))))
    return base + (f"Thresholds chosen on each run's validation set by rule ({rules}: Youden's J; sensitivity "
                   "0.90) and applied unchanged to every test set (operating_points.csv, with sensitivity, "
                   "specificity, PPV, NPV and intervals).")


def _shift_text(table: pd.DataFrame, config: StudyConfig) -> str:
    if table.empty:
        return ""
    cells = []
    for _, r in table.iterrows():  # label names hold spaces: a row by column name, not by attribute
        prev = ", ".join(f"{lab} {r[f'prevalence_{lab}']:.3f}" for lab in config.labels
                         if f"prevalence_{lab}" in table and not pd.isna(r[f"prevalence_{lab}"]))
        age = "not recorded" if pd.isna(r["age_mean"]) else f"{r['age_mean']} ± {r['age_sd']}"
        female = "sex not recorded" if pd.isna(r["female_pct"]) else f"female {r['female_pct']} %"
        cells.append(f"{r['dataset']} ({r['role']}): age {age}, {female}, "
                     f"views {r['views']}, prevalence {prev or 'not recorded'}")
    return "; ".join(cells) + ". Setting and eligibility are those of each dataset (5a, 6b); image statistics " \
        "are not tabulated."


def _analysis_counts(inputs: StudyInputs) -> str:
    if inputs.splits is None:
        return ""
    frame = inputs.manifest.merge(inputs.splits[["image_id", "split"]], on="image_id", how="left")
    cells = []
    for conf in inputs.config.configurations:
        for split, sets in (("train", conf.train), ("val", conf.train), ("test", conf.internal)):
            part = frame.loc[frame["dataset"].isin(sets) & (frame["split"] == split)]
            events = ", ".join(f"{lab} {int((part[lab] == 1).sum())}" for lab in inputs.config.labels
                               if lab in part)  # fmt: skip
            cells.append(f"{conf.name} {split}: {len(part)} images, {part['patient_id'].nunique()} patients "
                         f"({events})")
        for name in conf.external:
            part = frame.loc[(frame["dataset"] == name) & (frame["split"] == "test")]
            cells.append(f"{conf.name} external {name}: {len(part)} images")
    return "; ".join(cells) + "."


def _model_text(t: TripodInputs) -> str:
    config = t.inputs.config
    runs = {p.run.path: p for p in t.predictions}
    weights = []
    for p in runs.values():
        # Prediction records the weights' hash in each predictions file: the weights that made these results,
        # read back instead of hashing every checkpoint again at each report.
        recorded = parquet_metadata(p.path).get("checkpoint_sha256")
        digest = f"best.ckpt sha256 {recorded[:16]}" if recorded else "weights hash not recorded (made elsewhere)"
        weights.append(f"{p.configuration}/{p.arch}" + (f" seed {p.seed}" if p.seed is not None else "")
                       + f": {digest}")  # fmt: skip
    pretrained = ", ".join(f"{a} {h[:16]}" for a, h in config.train.weights_sha256.items())
    versions = ", ".join(f"{name} {_version(name)}" for name in _PACKAGES)
    return ("; ".join(weights) + (f"; pretrained weights sha256 {pretrained}" if pretrained else "")
            + f". Hyperparameters as in 12c; seeds {', '.join(map(str, config.train.seed_list()))}. Software: cxrgen "
            f"{cxrgen.__version__}" + (f" (commit {_commit()})" if _commit() else "") + f", {versions}. The "
            "checkpoints are state_dict files usable with `cxrgen predict`; access is the authors' decision.")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@functools.cache
def _commit() -> str:
    """The git commit of the installed cxrgen source (``+dirty`` with uncommitted changes); "" when unknown."""
    where = Path(cxrgen.__file__).parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)  # fmt: skip
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def link_shown(checklist: pd.DataFrame, pages: Sequence[str]) -> pd.DataFrame:
    """The checklist with links to sections absent from the rendered ``pages`` blanked (files stay linked)."""
    ids = {m for page in pages for m in re.findall(r'id="([^"]+)"', page)}
    keep = [not link.startswith("#") or link[1:] in ids for link in checklist["link"]]
    return checklist.assign(link=checklist["link"].where(keep, ""))


def counts(checklist: pd.DataFrame) -> tuple[int, int]:
    """(filled, to write) sub-items."""
    return int((checklist["status"] == FILLED).sum()), int((checklist["status"] == TO_WRITE).sum())
