"""Tests of cxrgen.metrics.evaluate: predictions schema, auc.csv / comparisons.csv, and published NIH predictions."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrgen import metrics
from cxrgen.metrics.clustered import clustered_paired_bootstrap, seed_bootstrap_auc
from cxrgen.metrics.evaluate import (
    AUC_COLUMNS,
    COMPARISON_COLUMNS,
    UNFINISHED_KEY,
    PredictionsError,
    auc_table,
    compare_predictions,
    evaluate_files,
    read_predictions,
)
from cxrgen.metrics.pairing import PairingError
from cxrgen.utils.fileio import write_parquet

LABELS = ["Atelectasis", "Pleural Effusion"]
REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


def _predictions(n_patients: int = 200, seed: int = 0, strength: float = 1.0) -> pd.DataFrame:
    """Synthetic predictions: 1-3 images per patient, a NaN label now and then, two labels."""
    rng = np.random.default_rng(seed)  # the model's noise
    label_rng = np.random.default_rng(1000)  # images and ground truth, shared by every model on this test set
    per = label_rng.integers(1, 4, size=n_patients)
    patient = np.repeat([f"p{i:04d}" for i in range(n_patients)], per)
    n = patient.size
    df = pd.DataFrame({"image_id": [f"img{i:05d}" for i in range(n)], "patient_id": patient})
    for k, lab in enumerate(LABELS):
        y = (label_rng.random(n) < 0.3 + 0.1 * k).astype(float)
        y[label_rng.random(n) < 0.05] = np.nan
        logit = strength * 2.0 * np.nan_to_num(y) + rng.normal(size=n)
        df[f"y_{lab}"] = y
        df[f"p_{lab}"] = 1.0 / (1.0 + np.exp(-logit))
    return df


def _write(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


# --------------------------------------------------------------------------------------------- schema


def test_read_predictions_round_trip(tmp_path: Path) -> None:
    df = _predictions()
    df["patient_id"] = np.arange(len(df)) // 2  # integer ids are read back as strings
    frame, labels = read_predictions(_write(df, tmp_path / "nih.parquet"))
    assert labels == LABELS
    assert frame["patient_id"].iloc[3] == "1"
    np.testing.assert_array_equal(frame["y_Pleural Effusion"].to_numpy(), df["y_Pleural Effusion"].to_numpy())


def _bad(df: pd.DataFrame, tmp_path: Path, suffix: str = ".parquet") -> Path:
    return _write_as(df, tmp_path / f"bad{suffix}")


def _write_as(df: pd.DataFrame, path: Path) -> Path:
    """Write a predictions frame as parquet, CSV or TSV (optionally gzipped), by the file's suffix."""
    if path.name.endswith(".parquet"):
        return _write(df, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, sep="\t" if ".tsv" in path.name else ",", index=False)  # gzip inferred from .gz
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.drop(columns=["patient_id"]), r"bad\.\w+(\.gz)?: missing column 'patient_id'"),
        (lambda d: d.drop(columns=["image_id"]), r"missing column 'image_id'"),
        (lambda d: d.drop(columns=["p_Atelectasis"]), r"'y_Atelectasis' has no matching 'p_Atelectasis'"),
        (lambda d: d.drop(columns=["y_Atelectasis"]), r"'p_Atelectasis' has no matching 'y_Atelectasis'"),
        (lambda d: d.assign(**{"p_Pleural Effusion": 1.2}), r"column 'p_Pleural Effusion'.*\[0, 1\]"),
        (lambda d: d.assign(p_Atelectasis=np.nan), r"column 'p_Atelectasis'"),
        (lambda d: d.assign(y_Atelectasis=-1.0), r"column 'y_Atelectasis' must hold 0, 1 or NaN.*-1\.0"),
        (lambda d: d.assign(y_Atelectasis="yes"), r"column 'y_Atelectasis' is not numeric"),
        (lambda d: d.assign(image_id="same"), r"column 'image_id' has \d+ duplicated rows"),
        (lambda d: d[["image_id", "patient_id"]], r"no label columns"),
    ],
)
@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".tsv.gz"])
def test_bad_predictions_name_file_and_column(
    mutate: Callable[[pd.DataFrame], pd.DataFrame], message: str, suffix: str, tmp_path: Path
) -> None:
    """Parquet, CSV and TSV files are validated alike, with the same messages."""
    path = _bad(mutate(_predictions(50)), tmp_path, suffix)
    with pytest.raises(PredictionsError, match=message) as err:
        read_predictions(path)
    assert str(path) in str(err.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet"):
        read_predictions(tmp_path / "nope.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(PredictionsError, match=r"junk\.parquet: cannot read"):
        read_predictions(junk)
    odd = tmp_path / "preds.xlsx"
    odd.write_text("x")
    with pytest.raises(PredictionsError, match=r"preds\.xlsx: a predictions file must end in \.parquet, \.csv"):
        read_predictions(odd)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text('image_id,patient_id,y_A,p_A\n"a,1\n')
    with pytest.raises(PredictionsError, match=r"ragged\.csv: cannot read as a comma-separated table"):
        read_predictions(ragged)


def test_text_ids_keep_leading_zeros_and_blank_y_is_nan(tmp_path: Path) -> None:
    path = tmp_path / "nih.csv"
    path.write_text("image_id,patient_id,y_Edema,p_Edema\n00000010_000.png,00010,1,0.25\nb.png,00011,,0.5\n")
    frame, labels = read_predictions(path)
    assert labels == ["Edema"] and frame["patient_id"].tolist() == ["00010", "00011"]
    assert frame["y_Edema"].iloc[0] == 1.0 and math.isnan(frame["y_Edema"].iloc[1])


def test_csv_and_tsv_evaluate_equal_parquet(tmp_path: Path) -> None:
    """The same predictions as parquet, CSV, CSV.gz and TSV.gz give identical auc.csv files (but the path)."""
    df = _predictions(120, seed=3)
    tables = {}
    for suffix in (".parquet", ".csv", ".csv.gz", ".tsv.gz"):
        folder = tmp_path / suffix.strip(".").replace(".", "_")
        evaluate_files([_write_as(df, folder / f"nih{suffix}")], folder / "out", n_boot=100, seed=0)
        written = pd.read_csv(folder / "out" / "auc.csv")
        assert written["test_set"].tolist() == ["nih", "nih"] and written["source"].tolist() == ["nih", "nih"]
        tables[suffix] = written.drop(columns=["file"])
    for suffix, table in tables.items():
        pd.testing.assert_frame_equal(table, tables[".parquet"], check_exact=True, obj=suffix)


# --------------------------------------------------------------------------------------------- tables


def test_auc_table_matches_metrics_and_carries_extra_columns() -> None:
    df = _predictions(300)
    table = auc_table(df, LABELS, n_boot=100, seed=1, extra={"configuration": "nih", "arch": "densenet121"})
    assert list(table.columns) == ["configuration", "arch", *AUC_COLUMNS]
    assert (table["configuration"] == "nih").all()
    for _, row in table.iterrows():
        y, p = df[f"y_{row['label']}"].to_numpy(), df[f"p_{row['label']}"].to_numpy()
        keep = ~np.isnan(y)
        assert row["auc"] == pytest.approx(roc_auc_score(y[keep], p[keep]), abs=1e-12)
        assert row["n_pos"] == int((y == 1).sum()) and row["n_neg"] == int((y == 0).sum())
        assert row["ci_low"] <= row["auc"] <= row["ci_high"]
        assert row["delong_low"] < row["auc"] < row["delong_high"]
        assert row["n_boot"] == 100 and row["n_boot_degenerate"] == 0
        assert row["n_patients"] == df.loc[keep, "patient_id"].nunique()


def test_auc_table_one_class_label_is_nan_not_crash() -> None:
    df = _predictions(100)
    df["y_Atelectasis"] = 0.0
    with pytest.warns(metrics.OneClassWarning, match="Atelectasis"):
        table = auc_table(df, LABELS, n_boot=20)
    row = table.set_index("label").loc["Atelectasis"]
    assert math.isnan(row["auc"]) and math.isnan(row["ci_low"]) and row["n_boot_degenerate"] == 20
    assert not math.isnan(table.set_index("label").loc["Pleural Effusion", "auc"])


def test_compare_paired_and_unpaired() -> None:
    strong, weak = _predictions(400, seed=1, strength=1.5), _predictions(400, seed=2, strength=0.3)
    # same images, rows in another order: aligned on image_id, the report's clustered paired bootstrap
    paired = compare_predictions(strong, weak.sample(frac=1.0, random_state=0), LABELS, name_a="s", name_b="w",
                                 n_boot=200)  # fmt: skip
    assert (paired["test"] == "clustered_paired_bootstrap").all()
    assert (paired["p"] < 0.01).all() and (paired["difference"] > 0).all()
    assert (paired[["n_dropped_a", "n_dropped_b"]] == 0).all().all()
    np.testing.assert_allclose(paired["p_holm"], metrics.holm(paired["p"].to_numpy()))
    y, groups = strong["y_Atelectasis"].to_numpy(), strong["patient_id"].to_numpy()
    expected = clustered_paired_bootstrap(y, strong["p_Atelectasis"].to_numpy()[None], weak["p_Atelectasis"]
                                          .to_numpy()[None], groups, n_boot=200, seed=0, ci=0.95)  # fmt: skip
    assert paired.loc[0, "se"] == pytest.approx(expected.se) and paired.loc[0, "p"] == pytest.approx(expected.p)
    image_level = metrics.delong_paired_test(y, strong["p_Atelectasis"], weak["p_Atelectasis"])
    assert paired.loc[0, "delong_p"] == pytest.approx(image_level.p)  # the labelled secondary column

    same = compare_predictions(strong, strong, LABELS)
    assert (same["difference"] == 0).all() and (same["p"] == 1.0).all()

    other = _predictions(150, seed=3, strength=1.5)
    other["image_id"] = "x" + other["image_id"]
    unpaired = compare_predictions(strong, other, LABELS, n_boot=200)
    assert (unpaired["test"] == "clustered_unpaired").all()
    a = seed_bootstrap_auc(y, strong["p_Atelectasis"].to_numpy()[None], groups, n_boot=200, seed=0, ci=0.95)
    b = seed_bootstrap_auc(other["y_Atelectasis"].to_numpy(), other["p_Atelectasis"].to_numpy()[None],
                           other["patient_id"].to_numpy(), n_boot=200, seed=0, ci=0.95)  # fmt: skip
    assert unpaired.loc[0, "se"] == pytest.approx(math.hypot(a.se, b.se))


def test_paired_comparison_refuses_different_ground_truth() -> None:
    a = _predictions(100, seed=1)
    b = a.copy()
    b.loc[b.index[:5], "y_Atelectasis"] = 1.0 - a.loc[a.index[:5], "y_Atelectasis"].fillna(0)
    with pytest.raises(PairingError, match="'y_Atelectasis' differs"):
        compare_predictions(a, b, LABELS)


# --------------------------------------------------------------------------------------------- files


def test_evaluate_files_round_trip(tmp_path: Path) -> None:
    a = _write(_predictions(250, seed=1, strength=1.5), tmp_path / "runs_a_nih.parquet")
    (tmp_path / "m2").mkdir()
    b = _write(_predictions(250, seed=2, strength=0.5), tmp_path / "m2" / "nih.parquet")
    out = tmp_path / "results"
    auc, comps = evaluate_files([a, b], out, n_boot=50, seed=0)
    disk = pd.read_csv(out / "auc.csv")
    required = ["test_set", "label", "auc", "ci_low", "ci_high", "n_pos", "n_neg", "delong_low", "delong_high",
                "n_boot_degenerate"]
    assert set(required) <= set(disk.columns)
    assert disk["test_set"].tolist() == ["runs_a_nih", "runs_a_nih", "nih", "nih"]
    assert disk["label"].tolist() == LABELS * 2
    np.testing.assert_allclose(disk["auc"], auc["auc"])
    assert (disk["ci_low"] <= disk["auc"]).all() and (disk["auc"] <= disk["ci_high"]).all()
    assert comps is not None
    disk_c = pd.read_csv(out / "comparisons.csv")
    assert {"a", "b", "label", "test", "auc_a", "auc_b", "statistic", "p", "p_holm"} <= set(disk_c.columns)
    assert disk_c["test"].tolist() == ["clustered_paired_bootstrap"] * 2
    assert disk_c["a"].tolist() == ["runs_a_nih"] * 2 and disk_c["b"].tolist() == ["nih"] * 2
    assert (disk_c["p_holm"] >= disk_c["p"]).all()
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temporary files

    # same seed, same intervals; a single file writes no comparisons
    again, none = evaluate_files([a], tmp_path / "single", n_boot=50, seed=0)
    assert none is None and not (tmp_path / "single" / "comparisons.csv").exists()
    np.testing.assert_array_equal(again["ci_low"], auc["ci_low"][:2])


def test_evaluate_files_same_stem_in_two_folders(tmp_path: Path) -> None:
    paths = []
    for k, model in enumerate(["densenet", "inception"]):
        (tmp_path / model).mkdir()
        paths.append(_write(_predictions(80, seed=k), tmp_path / model / "mimic.parquet"))
    auc, comps = evaluate_files(paths, tmp_path / "out", n_boot=20)
    assert set(auc["test_set"]) == {"mimic"}
    assert comps is not None and comps.loc[0, "a"] == "densenet/mimic" and comps.loc[0, "b"] == "inception/mimic"


# --------------------------------------------------------------------------------------------- real data

NIH_LABELS = {  # paper label -> NIH token in `Finding Labels` / `prob_<token>`
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Pleural Effusion": "Effusion",
}


@pytest.mark.realdata
def test_published_chexnet_reproduction_predictions(tmp_path: Path) -> None:
    preds_csv = REALDATA / "nih" / "model_outputs_reproduce_chexnet" / "preds.csv"
    meta_csv = REALDATA / "nih" / "metadata" / "Data_Entry_2017_v2020.csv.gz"
    if not (preds_csv.is_file() and meta_csv.is_file()):
        pytest.skip(f"published NIH predictions not found under {REALDATA}")
    preds = pd.read_csv(preds_csv)
    meta = pd.read_csv(meta_csv, usecols=["Image Index", "Finding Labels", "Patient ID"])
    joined = preds.merge(meta, on="Image Index", how="inner", validate="one_to_one")
    assert len(joined) == len(preds), "every predicted image must have a metadata row"
    findings = joined["Finding Labels"].str.split("|")
    df = pd.DataFrame({"image_id": joined["Image Index"], "patient_id": joined["Patient ID"]})
    for label, token in NIH_LABELS.items():
        df[f"y_{label}"] = findings.map(lambda f, t=token: float(t in f))
        df[f"p_{label}"] = joined[f"prob_{token}"].astype(float)
    path = tmp_path / "nih_test.parquet"
    df.to_parquet(path, index=False)

    auc, comps = evaluate_files([path], tmp_path / "out", n_boot=200, seed=0)
    assert comps is None and len(auc) == 5
    for _, row in auc.iterrows():
        expected = roc_auc_score(df[f"y_{row['label']}"], df[f"p_{row['label']}"])
        assert abs(row["auc"] - expected) < 1e-9
        assert row["ci_low"] <= row["auc"] <= row["ci_high"]
        assert row["delong_low"] <= row["auc"] <= row["delong_high"]
        assert row["n_patients"] < row["n_pos"] + row["n_neg"]  # several images per patient
    # the AUCs the reproduction published beside its predictions
    published_csv = preds_csv.parent / "aucs.csv"
    if published_csv.is_file():
        published = pd.read_csv(published_csv).set_index("label")["auc"]
        for label, token in NIH_LABELS.items():
            ours = auc.set_index("label").loc[label, "auc"]
            assert abs(ours - published[token]) < 1e-9


# --------------------------------------------------------------------------------------------- command


def test_cli_evaluate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxrgen.cli import app

    good = _write(_predictions(60, seed=1), tmp_path / "nih.parquet")
    result = CliRunner().invoke(app, ["evaluate", str(good), "--out", str(tmp_path / "out"), "--n-boot", "20"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "out" / "auc.csv")) == len(LABELS)

    bad = _write(_predictions(20).assign(y_Atelectasis=3.0), tmp_path / "bad.parquet")
    result = CliRunner().invoke(app, ["evaluate", str(bad), "--out", str(tmp_path / "out2")])
    assert result.exit_code == 1
    assert "y_Atelectasis" in result.stderr and "bad.parquet" in result.stderr


def _evaluate_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real ``cxrgen evaluate`` in a child process, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cxrgen", "evaluate", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip


def test_cli_evaluate_pairs_on_the_intersection_and_refuses_little_overlap(tmp_path: Path) -> None:
    full = _predictions(200, seed=1, strength=1.5)
    lost = full["image_id"].iloc[17]
    a = tmp_path / "a" / "mimic.parquet"
    a.parent.mkdir()
    write_parquet(full, a, metadata={UNFINISHED_KEY: "true"})  # as `cxrgen predict --allow-unfinished` marks it
    b = _write(_predictions(200, seed=2, strength=0.5).query("image_id != @lost"), tmp_path / "b" / "mimic.parquet")
    done = _evaluate_cli(a, b, "--out", tmp_path / "out", "--n-boot", "50")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"paired on {len(full) - 1} shared images; dropped 1 of {a} and 0 of {b}" in " ".join(done.stderr.split())
    comps = pd.read_csv(tmp_path / "out" / "comparisons.csv")
    assert list(comps.columns) == [*COMPARISON_COLUMNS, "unfinished"] and comps["unfinished"].all()
    assert pd.read_csv(tmp_path / "out" / "auc.csv")["unfinished"].tolist() == [True, True, False, False]
    assert comps["test"].tolist() == ["clustered_paired_bootstrap"] * 2 and comps["a"].tolist() == ["a/mimic"] * 2
    assert comps["n_dropped_a"].tolist() == [1, 1] and comps["n_dropped_b"].tolist() == [0, 0]
    kept = full[full["image_id"] != lost].dropna(subset=["y_Atelectasis"])  # AUC a on the shared images only
    row = comps.set_index("label").loc["Atelectasis"]
    assert row["auc_a"] == pytest.approx(roc_auc_score(kept["y_Atelectasis"], kept["p_Atelectasis"]), abs=1e-12)
    assert row["n_a"] == row["n_b"] == len(kept)

    n_few = int(len(full) * 0.9)
    few = _write(full.iloc[:n_few], tmp_path / "few" / "mimic.parquet")
    refused = _evaluate_cli(a, few, "--out", tmp_path / "refused")
    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())
    assert message.startswith("error:") and str(a) in message and str(few) in message, message
    assert f"share {n_few} images ({n_few / len(full):.1%} of the larger)" in message, message
    assert "a paired comparison needs at least 95%" in message, message
    assert not (tmp_path / "refused").exists()  # refused before anything is written


def test_cli_evaluate_pairs_bare_with_namespaced_ids_and_effusion_with_pleural_effusion(tmp_path: Path) -> None:
    """cxrgen's own file (``nih:`` ids, ``Pleural Effusion``) against a converted one (bare ids, ``Effusion``, a
    label more): paired, every shared label compared, the label in one file only named in a warning."""
    ours = _predictions(150, seed=1, strength=1.5)
    ours = ours.assign(image_id="nih:" + ours["image_id"], patient_id="nih:" + ours["patient_id"])
    theirs = _predictions(150, seed=2, strength=0.5).rename(columns={"y_Pleural Effusion": "y_Effusion",
                                                                     "p_Pleural Effusion": "p_Effusion"})
    theirs = theirs.assign(y_Hernia=0.0, p_Hernia=0.5)
    a = _write(ours, tmp_path / "a" / "nih.parquet")
    b = _write_as(theirs, tmp_path / "b" / "nih.csv")
    done = _evaluate_cli(a, b, "--out", tmp_path / "out", "--n-boot", "50")
    assert done.returncode == 0, done.stderr[-2000:]
    comps = pd.read_csv(tmp_path / "out" / "comparisons.csv")
    assert comps["label"].tolist() == LABELS  # Effusion is Pleural Effusion
    assert comps["test"].tolist() == ["clustered_paired_bootstrap"] * 2
    assert comps["n_dropped_a"].tolist() == [0, 0] and comps["n_a"].tolist() == comps["n_b"].tolist()
    stderr = " ".join(done.stderr.split())
    assert "label(s) [] only in" in stderr and f"['Hernia'] only in {b} are not compared" in stderr, stderr
    assert pd.read_csv(tmp_path / "out" / "auc.csv")["label"].tolist() == [*LABELS, *LABELS, "Hernia"]


def test_cli_evaluate_files_that_cannot_be_paired_say_why_in_one_line(tmp_path: Path) -> None:
    full = _predictions(200, seed=1)
    half = full.iloc[:100]
    a = _write(full.assign(image_id="nih:" + full["image_id"]), tmp_path / "a.parquet")
    b = _write(half, tmp_path / "b.parquet")
    refused = _evaluate_cli(a, b, "--out", tmp_path / "refused")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), refused.stderr
    assert "share 100 images (ids compared without the 'nih:' namespace of" in lines[0], lines[0]
    assert not (tmp_path / "refused").exists()

    mimic = _write(half.assign(image_id="mimic:" + half["image_id"]), tmp_path / "mimic.parquet")
    done = _evaluate_cli(a, mimic, "--out", tmp_path / "unpaired", "--n-boot", "20")
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert (f"{a} and {mimic} share no image id (namespaces ['nih'] vs ['mimic']: different datasets): compared "
            "as independent test sets (clustered unpaired test), not paired") in said, said
    assert set(pd.read_csv(tmp_path / "unpaired" / "comparisons.csv")["test"]) == {"clustered_unpaired"}
