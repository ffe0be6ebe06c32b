"""A linear-probe study on the synthetic hospitals, end to end through ``cxrgen study`` and ``cxrgen report``.

The probe's backbone has random weights (no downloadable weights here), and the report must say so beside the
fine-tuned CNN; its features still separate the synthetic findings above chance.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.metrics.evaluate import read_predictions
from cxrgen.study.config import load_study
from cxrgen.synthetic import write_synthetic
from cxrgen.utils.fileio import parquet_metadata

PROBE_LABEL = "rand_probe (linear probe on resnet18, random weights)"
STUDY = """\
name: probe
out: study
datasets:
  chexpert: {reader: chexpert, root: data/chexpert, csv: train.csv}
  mimic: {reader: mimic, root: data/mimic, labels: chexpert}
uncertainty: {Atelectasis: ones, Cardiomegaly: zeros, Consolidation: zeros, Edema: ones, Pleural Effusion: ones}
splits:
  mimic: {method: official}
preprocess: {clahe: true, engine: opencv, size: 64}
architectures: [test_resnet, {name: rand_probe, timm: resnet18, mode: linear_probe}]
train: {batch_size: 16, max_epochs: 1, patience: 1, pretrained: false, num_workers: 0}
probe: {Cs: [0.001, 0.01, 0.1, 1.0]}
evaluation: {bootstrap: 30, estimate: {labelled: true}}
configurations:
  - {name: chexpert, train: [chexpert], internal: [chexpert], external: [mimic]}
review: {label: Cardiomegaly, per_kind: 2}
"""


def cxrgen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cxrgen", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe_study")
    write_synthetic(root / "data", seed=3, scale=0.15, image_size=64)
    (root / "study.yaml").write_text(STUDY)
    result = cxrgen("study", "study.yaml", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    result = cxrgen("report", "study", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.mark.slow
def test_probe_predictions_pair_with_the_cnn_and_say_random_weights(finished: Path) -> None:
    runs = finished / "study" / "runs" / "chexpert"
    for test_set in ("internal", "mimic"):
        probe, labels = read_predictions(runs / "rand_probe" / "predictions" / f"{test_set}.parquet")
        cnn, _ = read_predictions(runs / "test_resnet" / "predictions" / f"{test_set}.parquet")
        assert probe["image_id"].tolist() == cnn["image_id"].tolist()  # same images, same order: paired tests work
        for label in labels:
            np.testing.assert_array_equal(probe[f"y_{label}"].to_numpy(), cnn[f"y_{label}"].to_numpy())
        metadata = parquet_metadata(runs / "rand_probe" / "predictions" / f"{test_set}.parquet")
        assert (metadata["mode"], metadata["backbone"], metadata["backbone_weights"]) == (
            "linear_probe", "resnet18", "random"
        )
    assert not (runs / "rand_probe" / "checkpoints").exists()  # a probe trains no network
    chosen = pd.read_json(runs / "rand_probe" / "probe.json")
    assert set(chosen.loc["C"]) <= {0.001, 0.01, 0.1, 1.0}
    embeddings = sorted(p.name for p in (finished / "study" / "embeddings").iterdir())
    assert embeddings == ["chexpert-rand_probe-64-opencv", "mimic-rand_probe-64-opencv"]


@pytest.mark.slow
def test_report_shows_the_probe_beside_the_cnn_as_random_weights(finished: Path) -> None:
    results = finished / "study" / "results"
    auc = pd.read_csv(results / "auc.csv")
    assert len(auc) == 2 * 2 * 5  # archs x test sets x labels
    assert set(auc["arch"]) == {"test_resnet", "rand_probe"}
    table = (results / "table1.md").read_text()
    models = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:]
    assert models == ["test_resnet", "test_resnet", PROBE_LABEL, PROBE_LABEL]
    page = (results / "report.html").read_text()
    assert page.count(f'<td class="key">{PROBE_LABEL}</td>') == 2
    assert f"ROC curves of {PROBE_LABEL}" in page
    assert "rand_probe: linear probe(s) on randomly initialized backbones (random weights" in page
    assert (results / "figures" / "roc_rand_probe.png").is_file()
    comparisons = pd.read_csv(results / "comparisons.csv")
    pairs = comparisons.loc[comparisons["family"] == "architectures", ["arch_a", "arch_b"]]
    assert len(pairs) == 2 * 5 and {frozenset(p) for p in pairs.itertuples(index=False)} == {
        frozenset({"test_resnet", "rand_probe"})
    }


@pytest.mark.slow
def test_random_features_separate_the_synthetic_findings(finished: Path) -> None:
    auc = pd.read_csv(finished / "study" / "runs" / "chexpert" / "rand_probe" / "auc.csv")
    internal = auc.loc[auc["test_set"] == "internal"].set_index("label")["auc"]
    assert internal.mean() > 0.6, internal
    assert internal["Cardiomegaly"] > 0.7, internal


@pytest.mark.slow
def test_a_second_study_run_refits_nothing(finished: Path) -> None:
    config = load_study(finished / "study.yaml")
    assert config.architectures == ["test_resnet", "rand_probe"]
    predictions = finished / "study" / "runs" / "chexpert" / "rand_probe" / "predictions" / "mimic.parquet"
    features = finished / "study" / "embeddings" / "mimic-rand_probe-64-opencv" / "features.npy"
    before = (predictions.stat().st_mtime_ns, features.stat().st_mtime_ns)
    result = cxrgen("study", "study.yaml", "--only", "chexpert/rand_probe", cwd=finished)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (predictions.stat().st_mtime_ns, features.stat().st_mtime_ns) == before


@pytest.mark.slow
def test_embed_command_finds_finished_embeddings_and_refuses_a_cnn(finished: Path) -> None:
    features = finished / "study" / "embeddings" / "chexpert-rand_probe-64-opencv" / "features.npy"
    before = features.stat().st_mtime_ns
    result = cxrgen("embed", "study.yaml", cwd=finished)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "chexpert-rand_probe-64-opencv" in result.stdout and "mimic-rand_probe-64-opencv" in result.stdout
    assert features.stat().st_mtime_ns == before
    result = cxrgen("embed", "study.yaml", "--arch", "test_resnet", cwd=finished)
    assert result.returncode == 1
    assert "'test_resnet' is no linear-probe architecture" in result.stderr


@pytest.mark.slow
def test_the_probe_validates_like_a_cnn_and_its_embeddings_measure_the_target(finished: Path) -> None:
    """Issue 24: the probe writes validation.parquet (so it is estimated before the labels), and the embeddings
    give the flag's embedding distance, one per configuration and target, shown for both models."""
    from cxrgen.shift.embedding_distance import domain_auc
    from cxrgen.shift.estimates import METHODS

    runs = finished / "study" / "runs" / "chexpert"
    probe, _ = read_predictions(runs / "rand_probe" / "validation.parquet")
    cnn, _ = read_predictions(runs / "test_resnet" / "validation.parquet")
    assert probe["image_id"].tolist() == cnn["image_id"].tolist()
    table = pd.read_csv(finished / "study" / "results" / "estimates.csv")
    auc = table.loc[(table["metric"] == "auc") & table["method"].isin(list(METHODS))]
    assert set(auc["arch"]) == {"test_resnet", "rand_probe"} and auc["embedding_auc"].nunique() == 1
    embeddings = finished / "study" / "embeddings"
    features = {}
    for name in ("chexpert", "mimic"):
        index = pd.read_parquet(embeddings / f"{name}-rand_probe-64-opencv" / "index.parquet").set_index("image_id")
        features[name] = (np.load(embeddings / f"{name}-rand_probe-64-opencv" / "features.npy"), index["row"])
    target, _ = read_predictions(runs / "rand_probe" / "predictions" / "mimic.parquet")
    home_x = features["chexpert"][0][features["chexpert"][1].loc[probe["image_id"]].to_numpy()]
    target_x = features["mimic"][0][features["mimic"][1].loc[target["image_id"]].to_numpy()]
    expected, _ = domain_auc(home_x, target_x, probe["patient_id"].to_numpy(), target["patient_id"].to_numpy())
    assert auc["embedding_auc"].iloc[0] == pytest.approx(expected)
