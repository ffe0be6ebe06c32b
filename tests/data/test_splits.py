from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.data.splits import LeakageError, check_leakage, make_splits, official_split, patient_buckets, random_split
from cxrgen.study.config import SplitConfig, StudyConfig


def frame_of(patients: list[str], images_per_patient: int = 2) -> pd.DataFrame:
    pids = [p for p in patients for _ in range(images_per_patient)]
    return pd.DataFrame(
        {"image_id": [f"x:{i}" for i in range(len(pids))], "patient_id": pids, "official_split": ""}
    )


def test_buckets_are_fixed_values_independent_of_the_rest() -> None:
    one = patient_buckets(np.array(["nih:1", "nih:2", "nih:3"]), seed=0)
    # reference values: sha256 of the salted id, first 8 bytes as a fraction of 2**64
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"cxrgen-split:0:nih:2").digest()[:8], "big") / 2**64
    assert one[1] == expected
    assert patient_buckets(np.array(["nih:2"]), seed=0)[0] == expected
    assert patient_buckets(np.array(["nih:2"]), seed=1)[0] != expected


def test_random_split_fractions_seed_and_stability() -> None:
    spec = SplitConfig(fractions={"train": 0.72, "val": 0.08, "test": 0.2}, seed=0)
    frame = frame_of([f"d:{i}" for i in range(20_000)])
    split = random_split(frame, spec)
    per_patient = pd.Series(split[::2])
    shares = per_patient.value_counts(normalize=True)
    assert abs(shares["train"] - 0.72) < 0.01 and abs(shares["val"] - 0.08) < 0.006
    assert abs(shares["test"] - 0.20) < 0.01
    np.testing.assert_array_equal(split, random_split(frame, spec))  # same seed, same split
    assert (split != random_split(frame, SplitConfig(seed=1))).any()
    grown = frame_of([f"d:{i}" for i in range(25_000)])
    np.testing.assert_array_equal(random_split(grown, spec)[: len(frame)], split)  # new patients move nobody
    shuffled = frame.sample(frac=1.0, random_state=3)
    np.testing.assert_array_equal(random_split(shuffled, spec), pd.Series(split, index=frame.index)[shuffled.index])


def test_official_split_carves_val_from_train_val_by_patient() -> None:
    frame = frame_of([f"nih:{i}" for i in range(2_000)], images_per_patient=3)
    frame["official_split"] = np.where(np.arange(len(frame)) < 4_500, "train_val", "test")
    split = official_split(frame, SplitConfig(method="official", val_fraction=0.1), "nih")
    assert (split[4_500:] == "test").all()
    val_patients = frame.loc[split == "val", "patient_id"].nunique()
    assert 100 < val_patients < 200  # 10 % of 1,500 patients
    check_leakage(pd.DataFrame({"split": split}), frame["patient_id"])
    frame.loc[0, "official_split"] = ""
    with pytest.raises(ValueError, match="no official split"):
        official_split(frame, SplitConfig(method="official"), "nih")


def test_leakage_check_names_the_patient() -> None:
    splits = pd.DataFrame({"split": ["train", "test", "train"]})
    with pytest.raises(LeakageError, match=r"1 patient.*nih:7"):
        check_leakage(splits, pd.Series(["nih:7", "nih:7", "nih:8"]))


def test_make_splits_over_a_union_keeps_namespaces(tmp_path: Path) -> None:
    a = frame_of(["a:1", "a:2"]).assign(dataset="a", image_id=lambda f: "a" + f["image_id"])
    b = frame_of(["b:1", "b:2"]).assign(dataset="b", image_id=lambda f: "b" + f["image_id"])
    b["official_split"] = ["train", "train", "test", "test"]
    config = StudyConfig.model_validate({
        "name": "u", "out": str(tmp_path),
        "datasets": {"a": {"reader": "nih", "root": "/x"}, "b": {"reader": "mimic", "root": "/y"}},
        "splits": {"b": {"method": "official"}},
        "configurations": [{"name": "c", "train": ["a"], "internal": ["a"], "external": ["b"]}],
    })  # fmt: skip
    splits, metadata = make_splits(pd.concat([a, b], ignore_index=True), config)
    assert splits["dataset"].tolist() == ["a"] * 4 + ["b"] * 4
    assert splits["split"].tolist()[4:] == ["train", "train", "test", "test"]
    assert '"method": "official"' in metadata["cxrgen_splits"]


@pytest.mark.realdata
def test_real_nih_split_matches_the_paper_within_sampling_error(realdata: Path) -> None:
    from cxrgen.sources import get_reader

    frame = get_reader("nih")(
        realdata / "nih" / "metadata", name="nih", labels=["Cardiomegaly"],
        options={"metadata": "Data_Entry_2017_v2020.csv.gz"},
    )
    split = random_split(frame, SplitConfig(seed=0))
    check_leakage(pd.DataFrame({"split": split}), frame["patient_id"])
    paper_images = {"train": 80_657, "val": 9_169, "test": 22_294}
    paper_patients = {"train": 22_179, "val": 2_465, "test": 6_161}
    fractions = {"train": 0.72, "val": 0.08, "test": 0.2}
    sizes = frame.groupby("patient_id").size().to_numpy()
    for name, p in fractions.items():
        images = int((split == name).sum())
        patients = frame.loc[split == name, "patient_id"].nunique()
        # a patient-level split: image counts vary with the sum of squared cluster sizes
        sd_images = np.sqrt(p * (1 - p) * (sizes.astype(float) ** 2).sum())
        sd_patients = np.sqrt(p * (1 - p) * len(sizes))
        assert abs(images - paper_images[name]) < 3 * np.sqrt(2) * sd_images, (name, images)
        assert abs(patients - paper_patients[name]) < 3 * np.sqrt(2) * sd_patients, (name, patients)
    official = official_split(frame, SplitConfig(method="official"), "nih")
    assert int((official == "test").sum()) == 25_596
    assert int(np.isin(official, ["train", "val"]).sum()) == 86_524
    check_leakage(pd.DataFrame({"split": official}), frame["patient_id"])
