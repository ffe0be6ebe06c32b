"""One linear-probe run: embeddings of a configuration's datasets -> probes per label -> predictions files.

The rows come from :meth:`cxrgen.data.loaders.CXRDataModule.from_study`, the very selection the fine-tuned CNNs train
and are tested on (splits, exclusions, label policy), so a probe's predictions file holds the same images in the
same order and every paired comparison of the report works unchanged. Embedding row = cache row, so each part's
``rows`` index its dataset's features.

A run writes into ``runs/<configuration>/<arch>/``: ``config.yaml``, ``probe.json`` (per label the chosen C and
the validation AUC of every C), ``probe.npz`` (scaler and regression coefficients, no pickle) and
``predictions/<test_set>.parquet``, and ``validation.parquet`` (the probes on the val split the C was chosen on,
as a fine-tuned run's: thresholds, temperatures and the label-free estimates are fitted on it). It is skipped when
its predictions record the same inputs (embedding fingerprints, probe settings, seed, test rows).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cxrgen.data.loaders import CacheDataset, CXRDataModule, UnionDataset
from cxrgen.learn.embed import ensure_embeddings, open_embeddings, study_backbone
from cxrgen.learn.predict import predictions_frame, test_rows_digest
from cxrgen.learn.probes import LabelProbe, fit_probes, predict_probes
from cxrgen.study.config import dump_resolved
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import atomic_path, parquet_metadata, write_parquet, write_text

log = logging.getLogger(__name__)

#: Written into every probe predictions file and shown by the report.
MODE = "linear_probe"


def _features(parts: list[CacheDataset], datasets: list[str], embeddings: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(embeddings[d][part.rows]) for part, d in zip(parts, datasets, strict=True)])


def _parts(dataset: CacheDataset | UnionDataset) -> list[CacheDataset]:
    return list(dataset.parts) if isinstance(dataset, UnionDataset) else [dataset]


def _save_probes(probes: list[LabelProbe], folder: Path) -> None:
    summary = {
        probe.label: {"C": probe.C, "val_auc": {str(c): a for c, a in probe.val_auc.items()},
                      "prevalence": probe.prevalence, "fitted": probe.model is not None}
        for probe in probes
    }
    write_text(folder / "probe.json", json.dumps(summary, indent=2, sort_keys=True, allow_nan=True))
    arrays: dict[str, Any] = {}
    for j, probe in enumerate(probes):
        if probe.model is not None:
            scaler, regression = probe.model[0], probe.model[-1]
            arrays |= {f"{j}_mean": scaler.mean_, f"{j}_scale": scaler.scale_,
                       f"{j}_coef": regression.coef_, f"{j}_intercept": regression.intercept_}
    with atomic_path(folder / "probe.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def probe_run(
    study: Study,
    configuration_name: str,
    arch: str,
    *,
    device: str | None = None,
    datamodule: CXRDataModule | None = None,
    seed: int | None = None,
) -> list[Path]:
    """Embed (if needed), fit and predict one linear-probe run; returns its predictions files.

    Args:
        study: The prepared study (caches finished); ``arch`` must be a ``mode: linear_probe`` entry of its
            ``architectures``.
        configuration_name: The run's configuration.
        arch: The run's architecture name.
        device: Where the backbone embeds; the GPU when there is one.
        datamodule: The configuration's rows at this architecture's input size; built when omitted.
        seed: One of ``train.seeds`` (None: the first): the regressions' ``random_state``, and with several seeds
            the ``seed-<N>`` run folder.
    """
    config = study.config
    run = study.run(configuration_name, arch, seed)
    configuration = config.configuration(configuration_name)
    backbone = study_backbone(config, arch)
    size = config.input_size(arch)
    datasets = list(dict.fromkeys([*configuration.train, *configuration.internal, *configuration.external]))
    folders = ensure_embeddings(study, arch, datasets, device=device)
    embeddings, fingerprints = {}, {}
    for name, embedding_folder in folders.items():
        embeddings[name], meta = open_embeddings(embedding_folder)
        fingerprints[name] = meta["fingerprint"]
    if datamodule is None:
        datamodule = CXRDataModule.from_study(study, configuration_name, size)
    seed = study.seed(seed)
    settings = json.dumps(
        {"embeddings": fingerprints, "probe": config.probe.model_dump(mode="json"), "seed": seed,
         "labels": list(config.labels), "train_rows": test_rows_digest(datamodule.train),
         "val_rows": test_rows_digest(datamodule.val)},
        sort_keys=True,
    )
    probe_digest = hashlib.sha256(settings.encode()).hexdigest()
    folder = run.path
    test_sets = configuration.test_sets()
    outputs = [run.predictions(t.name) for t in test_sets]
    tests = {t.name: [datamodule.test_dataset(d) for d in t.datasets] for t in test_sets}
    rows = {name: test_rows_digest(parts[0] if len(parts) == 1 else UnionDataset(parts))
            for name, parts in tests.items()}
    written = [*zip(outputs, [rows[t.name] for t in test_sets], strict=True)]
    if len(datamodule.val):
        written.append((run.validation, test_rows_digest(datamodule.val)))
    if all(
        out.is_file()
        and parquet_metadata(out).get("probe_sha256") == probe_digest
        and parquet_metadata(out).get("test_rows_sha256") == digest
        for out, digest in written
    ):
        return outputs
    train_parts, val_parts = _parts(datamodule.train), _parts(datamodule.val)
    probes = fit_probes(
        config.labels,
        _features(train_parts, list(configuration.train), embeddings), datamodule.train.targets,
        _features(val_parts, list(configuration.train), embeddings), datamodule.val.targets,
        config.probe.Cs, class_weight=config.probe.class_weight, max_iter=config.probe.max_iter, seed=seed,
    )
    write_text(run.config, dump_resolved(config))
    _save_probes(probes, folder)
    weights = "random" if backbone.random_weights else backbone.weights_id()
    sets = [(out, t.name, tests[t.name], list(t.datasets)) for out, t in zip(outputs, test_sets, strict=True)]
    if len(datamodule.val):
        sets.append((run.validation, "validation", val_parts, list(configuration.train)))
    for out, name, parts, datasets in sets:
        x = _features(parts, datasets, embeddings)
        dataset = parts[0] if len(parts) == 1 else UnionDataset(parts)
        p = predict_probes(probes, x)
        frame = predictions_frame(dataset.image_ids, dataset.patient_ids, config.labels, p, dataset.targets)
        metadata = {
            "probe_sha256": probe_digest, "test_rows_sha256": test_rows_digest(dataset), "test_set": name,
            "arch": arch, "configuration": configuration_name, "mode": MODE, "backbone": backbone.timm_name,
            "backbone_weights": weights,
        }
        write_parquet(frame, out, metadata=metadata)
    log.info("probe %s/%s: C per label %s", configuration_name, arch, {p.label: p.C for p in probes})
    return outputs

