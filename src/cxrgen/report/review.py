"""The error review of the paper's Table 2: confident mistakes and borderline cases, with Grad-CAM maps.

For one label, configuration and test set (``review:`` in the study file; defaults: Cardiomegaly, the
configuration trained on most datasets, its first external test set) the review picks

* the most confident false positives and false negatives, and
* the borderline cases, whose probability is nearest the threshold,

``per_kind`` of each. Each architecture gets its own threshold: the one maximizing Youden's J (sensitivity +
specificity - 1) on this test set, since the models are not calibrated alike. Cases are ranked by the mean over
architectures of ``p - threshold`` (the margin), so a case is a false positive when the models together call it
positive. Grad-CAM maps (``pytorch_grad_cam.GradCAM`` on the registry's ``cam_layer``, target the label's logit)
show where each model looked; the paper's radiologist found e.g. a pacemaker pushing predictions up.

Everything past the predictions files is optional: without checkpoints (predictions trained elsewhere) or without
images (a study directory copied without its data) the review keeps the table and says what it left out, in
``ReviewResult.notes`` and in the log, instead of failing.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrgen import metrics
from cxrgen.errors import CxrgenError
from cxrgen.report.figures import new_figure
from cxrgen.report.inputs import INTERNAL, Predictions, StudyInputs
from cxrgen.report.seeds import drawn_seed

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("false positive", "false negative", "borderline")


@dataclass(frozen=True)
class ReviewTarget:
    """What the review looks at: one label of one configuration on one test set."""

    label: str
    configuration: str
    test_set: str
    per_kind: int


@dataclass
class ReviewResult:
    """The selected cases and what could be drawn for them.

    Attributes:
        target: Label, configuration and test set reviewed.
        thresholds: Architecture -> Youden threshold on this test set (predict positive when ``p >= t``).
        cases: One row per case: ``case, kind, image_id, patient_id, dataset, view, sex, age, y, p_<arch>...,
            margin`` (margin = mean over architectures of ``p - threshold``).
        cams: Architecture -> Grad-CAM overlays, uint8 RGB [K, H, W, 3] in case order, for the architectures
            whose checkpoint could be loaded.
        images: The preprocessed grayscale images, uint8 [H, W] per case (None where unreadable).
        notes: What was left out and why, in words for the report.
        drawn: Which training seed the review shows (``seed 3, the first of 2 seeds (3, 7)``); "" with one seed.
        unfinished: Architectures whose reviewed run has no ``done.json`` (marked in the figure and table).
    """

    target: ReviewTarget
    thresholds: dict[str, float]
    cases: pd.DataFrame
    cams: dict[str, np.ndarray] = field(default_factory=dict)
    images: list[np.ndarray | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drawn: str = ""
    unfinished: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        log.warning("error review: %s", message)
        self.notes.append(message)


def review_target(inputs: StudyInputs) -> ReviewTarget | None:
    """The study's ``review:`` settings with defaults filled in; None when the study has no configuration."""
    config = inputs.config
    settings = config.review
    if not config.configurations:
        return None
    if settings.configuration is not None:
        configuration = settings.configuration
    else:
        configuration = max(config.configurations, key=lambda c: len(c.train)).name  # first of the largest
    conf = next((c for c in config.configurations if c.name == configuration), None)
    test_set = settings.test_set or (conf.external[0] if conf is not None and conf.external else INTERNAL)
    return ReviewTarget(settings.label, configuration, test_set, settings.per_kind)


def youden_threshold(y: np.ndarray, p: np.ndarray, label: str) -> float:
    """The score threshold maximizing Youden's J = TPR - FPR (first one on ties); NaN with one class."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.OneClassWarning)
        curve = metrics.roc_curve_points(y, p, name=label, drop_intermediate=False)
    if not curve.fpr.size:
        return math.nan
    finite = np.isfinite(curve.thresholds)  # the first threshold is +inf (nothing predicted positive)
    j = np.where(finite, curve.tpr - curve.fpr, -np.inf)
    return float(curve.thresholds[int(np.argmax(j))])


def select_cases(
    merged: pd.DataFrame, archs: Sequence[str], thresholds: dict[str, float], per_kind: int
) -> pd.DataFrame:
    """Pick ``per_kind`` confident false positives, confident false negatives and borderline cases.

    Args:
        merged: One row per labelled image with ``image_id, patient_id, y`` and ``p_<arch>`` per architecture.
        archs: Architectures, in column order.
        thresholds: Youden threshold per architecture.
        per_kind: Cases per kind.

    Returns:
        The cases in the order false positives (highest margin first), false negatives (lowest margin first),
        borderline (smallest absolute margin first), with ``case`` (1-based), ``kind`` and ``margin`` added.
        A borderline case is never also one of the confident ones.
    """
    margin = np.mean([merged[f"p_{a}"].to_numpy() - thresholds[a] for a in archs], axis=0)
    frame = merged.assign(margin=margin)
    positive = frame["y"] == 1
    false_pos = frame.loc[~positive & (frame["margin"] >= 0)].sort_values("margin", ascending=False, kind="stable")
    false_neg = frame.loc[positive & (frame["margin"] < 0)].sort_values("margin", kind="stable")
    chosen = [false_pos.head(per_kind).assign(kind=KINDS[0]), false_neg.head(per_kind).assign(kind=KINDS[1])]
    taken = set(pd.concat(chosen)["image_id"])
    rest = frame.loc[~frame["image_id"].isin(taken)]
    border = rest.iloc[np.argsort(np.abs(rest["margin"].to_numpy()), kind="stable")[:per_kind]]
    chosen.append(border.assign(kind=KINDS[2]))
    cases = pd.concat(chosen, ignore_index=True)
    cases.insert(0, "case", np.arange(1, len(cases) + 1))
    return cases


def _merged_predictions(preds: Sequence[Predictions], label: str) -> pd.DataFrame:
    """``image_id, patient_id, y, p_<arch>...`` on the images every architecture scored, labelled ones only."""
    merged: pd.DataFrame | None = None
    for pred in preds:
        part = pred.frame[["image_id", "patient_id", f"y_{label}", f"p_{label}"]].rename(
            columns={f"y_{label}": "y", f"p_{label}": f"p_{pred.arch}"}
        )
        if merged is None:
            merged = part
            continue
        merged = merged.merge(part, on=["image_id", "patient_id"], suffixes=("", "_other"), validate="one_to_one")
        if not np.array_equal(merged["y"].to_numpy(), merged["y_other"].to_numpy(), equal_nan=True):
            raise CxrgenError(f"{pred.path}: column 'y_{label}' differs from the other architectures' files")
        merged = merged.drop(columns="y_other")
    if merged is None:
        raise CxrgenError("error review: no predictions to merge")
    return merged.loc[merged["y"].notna()].reset_index(drop=True)


def _input_size(inputs: StudyInputs, arch: str, meta_size: object) -> int:
    if isinstance(meta_size, int):
        return meta_size
    return inputs.config.input_size(arch)


def load_images(inputs: StudyInputs, cases: pd.DataFrame, size: int, result: ReviewResult) -> list[np.ndarray | None]:
    """Preprocessed uint8 [size, size] images of the cases, from the study's cache or else decoded afresh.

    The cache holds exactly what the model saw; decoding (``cxrgen.images.preprocess.preprocess`` with the study's
    preprocessing) is the fallback when the cache was deleted. Unreadable images are None, with a note.
    """
    from cxrgen.data.cache import CacheError, open_cache
    from cxrgen.images.preprocess import ImageError, preprocess

    preprocess_cfg = inputs.config.preprocess
    out: list[np.ndarray | None] = []
    caches: dict[str, tuple[np.ndarray, dict[str, int]] | None] = {}
    missing_roots: set[str] = set()
    for row in cases.itertuples(index=False):
        dataset, image_id, path = str(row.dataset), str(row.image_id), str(row.path)
        if dataset not in caches:
            try:
                images, index = open_cache(
                    inputs.study.dir.path, dataset, size, preprocess_cfg.engine, preprocess_cfg.clahe
                )
                ok = index.loc[index["ok"]] if "ok" in index.columns else index
                caches[dataset] = (images, dict(zip(ok["image_id"].astype(str), ok["row"].astype(int), strict=True)))
            except (CacheError, OSError) as exc:
                log.info("error review: no cache of %s at %d px (%s); decoding the images", dataset, size, exc)
                caches[dataset] = None
        cached = caches[dataset]
        if cached is not None and image_id in cached[1]:
            out.append(np.asarray(cached[0][cached[1][image_id]]))
            continue
        dataset_cfg = inputs.config.datasets.get(dataset)
        if dataset_cfg is None or not dataset_cfg.root.is_dir():
            if dataset not in missing_roots:
                missing_roots.add(dataset)
                where = "is not in the study config" if dataset_cfg is None else f"root {dataset_cfg.root} is absent"
                result.note(f"dataset {dataset!r} {where} and has no cache; its images are left out")
            out.append(None)
            continue
        try:
            out.append(preprocess(dataset_cfg.root / path, size, preprocess_cfg.engine, preprocess_cfg.clahe))
        except ImageError as exc:
            result.note(f"{image_id}: image unavailable ({exc.reason}); left out")
            out.append(None)
    return out


def _add_cams(inputs: StudyInputs, result: ReviewResult, cases: pd.DataFrame, seeds: Mapping[str, int | None]) -> None:
    """Fill ``result.images`` and ``result.cams``; every unavailable piece becomes a note.

    ``seeds`` maps each architecture to the seed whose scores the review shows, so the map is that model's.
    """
    target = result.target
    archs = list(seeds)
    known = inputs.config.train.seed_list()  # a seed folder the config does not name: the config's first seed
    chosen = {a: seeds[a] if seeds[a] in known else None for a in archs}
    checkpoints = {a: inputs.study.run(target.configuration, a, chosen[a]).best_checkpoint for a in archs}
    for arch, checkpoint in checkpoints.items():
        if not checkpoint.is_file():
            result.note(f"{arch}: no checkpoint at {checkpoint}; Grad-CAM left out (predictions made elsewhere?)")
    usable = {arch: path for arch, path in checkpoints.items() if path.is_file()}
    if usable:
        # Imported only when needed: prediction code pulls in Lightning, seconds to import.
        from cxrgen.learn.predict import default_device, load_run_model
        from cxrgen.models.registry import get_arch
        from cxrgen.models.saliency import cam_layer_name, grad_cam, overlay

        device = default_device()
    for arch, checkpoint in usable.items():
        try:
            model, meta = load_run_model(checkpoint)
        except CxrgenError as exc:
            result.note(f"{arch}: checkpoint {checkpoint} cannot be used ({exc}); Grad-CAM left out")
            continue
        labels = list(meta.get("labels", []))
        if target.label not in labels:
            result.note(f"{arch}: checkpoint {checkpoint} has no output {target.label!r}; Grad-CAM left out")
            continue
        size = _input_size(inputs, arch, meta.get("input_size"))
        images = load_images(inputs, cases, size, result)
        if not result.images:
            result.images = images
        if any(image is None for image in images):
            result.note(f"{arch}: Grad-CAM needs every case's image; left out")
            continue
        stack = np.stack([image for image in images if image is not None])
        maps = grad_cam(model.to(device), cam_layer_name(model, get_arch(arch)), stack, labels.index(target.label))
        result.cams[arch] = np.stack([overlay(image, cam) for image, cam in zip(stack, maps, strict=True)])
    if not result.images:
        size = _input_size(inputs, archs[0], None)
        result.images = load_images(inputs, cases, size, result)


def error_review(inputs: StudyInputs, predictions: Sequence[Predictions], cams: bool = True) -> ReviewResult | None:
    """Select the review cases and draw their Grad-CAM maps (see the module docstring).

    Args:
        inputs: The study's artifacts.
        predictions: Every predictions file of the study.
        cams: Load checkpoints and images for Grad-CAM; False keeps only the table.

    Returns:
        The review, or None when its predictions are absent (logged, not raised: the rest of the report stands).
    """
    target = review_target(inputs)
    if target is None:
        log.warning("error review: the study names no configuration; skipped")
        return None
    preds = [p for p in predictions if (p.configuration, p.test_set) == (target.configuration, target.test_set)]
    preds = [p for p in preds if target.label in p.labels]
    if not preds:
        log.warning(
            "error review: no predictions for label %r of configuration %r on test set %r; skipped",
            target.label,
            target.configuration,
            target.test_set,
        )
        return None
    first: dict[str, Predictions] = {}
    for pred in preds:  # several seeds: the first seed's file of each architecture (files come sorted by seed)
        first.setdefault(pred.arch, pred)
    drawn = drawn_seed(preds)
    preds = list(first.values())
    archs = list(first)
    merged = _merged_predictions(preds, target.label)
    y = merged["y"].to_numpy()
    thresholds = {arch: youden_threshold(y, merged[f"p_{arch}"].to_numpy(), target.label) for arch in archs}
    if any(math.isnan(t) for t in thresholds.values()):
        log.warning("error review: %r has one class on %r; no threshold, skipped", target.label, target.test_set)
        return None
    cases = select_cases(merged, archs, thresholds, target.per_kind)
    info = inputs.manifest[["image_id", "dataset", "path", "view", "sex", "age"]].astype({"image_id": str})
    cases = cases.merge(info, on="image_id", how="left", validate="one_to_one")
    front = ["case", "kind", "image_id", "patient_id", "dataset", "view", "sex", "age", "y"]
    cases = cases[[*front, *(f"p_{a}" for a in archs), "margin", "path"]]
    result = ReviewResult(target, thresholds, cases, drawn=drawn, unfinished=[p.arch for p in preds if p.unfinished])
    for arch in result.unfinished:
        result.note(f"{arch}: run {target.configuration}/{arch} is unfinished (no done.json); its scores are not a "
                    "finished model's")  # fmt: skip
    unknown = cases["dataset"].isna()
    if unknown.any():
        result.note(f"{int(unknown.sum())} case(s) are not in manifest.parquet; their images are left out")
        cases.loc[unknown, "dataset"] = ""
    if cams:
        _add_cams(inputs, result, cases, {arch: pred.seed for arch, pred in first.items()})
    return result


def review_figure(result: ReviewResult) -> Figure | None:
    """A grid: one row per case, the preprocessed image then one Grad-CAM overlay per architecture.

    Returns None when there is no image to show (the table in the report still lists the cases).
    """
    if not any(image is not None for image in result.images):
        return None
    archs = list(result.cams)
    ncols = 1 + len(archs)
    nrows = len(result.cases)
    fig = new_figure(2.4 * ncols, 2.5 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    prob_columns = [c for c in result.cases.columns if c.startswith("p_")]
    for i in range(nrows):
        row = result.cases.iloc[i]
        image = result.images[i] if i < len(result.images) else None
        ax = axes[i, 0]
        ax.set_axis_off()
        probs = ", ".join(f"{c[2:]} {float(row[c]):.2f}" for c in prob_columns)
        ax.set_title(f"#{row['case']} {row['kind']}, y={int(row['y'])}\n{probs}", fontsize=7)
        if image is None:
            ax.text(0.5, 0.5, "image unavailable", ha="center", va="center", fontsize=8)
        else:
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        for j, arch in enumerate(archs, start=1):
            axes[i, j].set_axis_off()
            axes[i, j].imshow(result.cams[arch][i])
            mark = " (unfinished)" if arch in result.unfinished else ""
            axes[i, j].set_title(f"Grad-CAM {arch}{mark}", fontsize=7)
    target = result.target
    seed = f", {result.drawn}" if result.drawn else ""
    fig.suptitle(
        f"Error review: {target.label}, configuration {target.configuration}, test set {target.test_set}{seed}"
    )
    return fig
