"""Size-matched and learning-curve subsamples (issue 25): exact n, equal shares, patient level, reruns, prevalence."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from cxrgen.data.splits import assign, check_leakage, patient_buckets
from cxrgen.data.subsample import (
    draw_subsample,
    equal_shares,
    planned_steps,
    pooled_prevalence,
    subsample_for,
)
from cxrgen.errors import CxrgenError
from cxrgen.runner.plan import plan_table
from cxrgen.study.config import LearningCurveDesign, SizeMatchedDesign, StudyConfig

LABELS = ["Cardiomegaly", "Edema"]
SOURCES = ["alpha", "beta", "gamma"]
#: Per-source prevalences far apart, so matching has work to do.
PREVALENCE = {"alpha": (0.10, 0.30), "beta": (0.25, 0.15), "gamma": (0.40, 0.45)}


def hospital_rows(seed: int = 3, patients: int = 400) -> pd.DataFrame:
    """Three hospitals of ``patients`` patients with 1-4 images each, labels, and patient-level splits."""
    rng = np.random.default_rng(seed)
    frames = []
    for name in SOURCES:
        counts = rng.integers(1, 5, size=patients)
        pid = np.repeat([f"{name}:{i}" for i in range(patients)], counts)
        frame = pd.DataFrame({"image_id": [f"{name}/{i}" for i in range(len(pid))], "dataset": name,
                              "patient_id": pid, "path": [f"{i}.png" for i in range(len(pid))]})  # fmt: skip
        for label, p in zip(LABELS, PREVALENCE[name], strict=True):
            frame[label] = (rng.random(len(frame)) < p).astype(float)
        fractions = {"train": 0.72, "val": 0.08, "test": 0.2}
        frame["split"] = assign(patient_buckets(frame["patient_id"], 0), fractions)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def study_config(tmp_path, design: dict) -> StudyConfig:
    datasets = {name: {"reader": "nih", "root": str(tmp_path / name)} for name in [*SOURCES, "delta"]}
    return StudyConfig.model_validate({
        "name": "s", "out": str(tmp_path / "out"), "datasets": datasets, "labels": LABELS,
        "architectures": ["resnet18"], "design": design,
    })  # fmt: skip


def design(**overrides) -> dict:
    return {"size_matched": {"sources": SOURCES, "n": [120, 480], "k": [1, 2], "replicates": 2, **overrides}}


def test_design_expands_into_named_configurations(tmp_path):
    config = study_config(tmp_path, design())
    names = [c.name for c in config.configurations]
    # 2 sizes x (3 single + 3 pairs) x 2 replicates
    assert len(names) == 24 and "sm-n480-k2-alpha.gamma-r1" in names
    conf = config.configuration("sm-n120-k2-alpha.beta-r0")
    assert conf.train == ["alpha", "beta"] and conf.external == ["gamma"]
    assert conf.subsample is not None and conf.subsample.n == 120 and conf.subsample.pool == SOURCES
    listed = study_config(tmp_path, design(external=["delta"], combinations=2))
    assert all(c.external == ["delta"] for c in listed.configurations)
    assert sum(c.name.startswith("sm-n120-k1") for c in listed.configurations) == 2 * 2  # 2 of 3 singles, 2 reps


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"k": [3]}, "external"), ({"external": ["alpha"]}, "outside"), ({"n": [1], "k": [2]}, "smaller than k")],
)
def test_design_refuses_incoherent_grids(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        study_config(tmp_path, design(**overrides))


def test_plain_configurations_keep_their_dump():
    conf = SizeMatchedDesign(sources=SOURCES, n=[10], k=[1]).configurations()[0]
    plain = conf.model_copy(update={"subsample": None})
    assert "subsample" not in plain.model_dump(mode="json")  # fingerprints of older runs stay as they were
    assert conf.model_dump(mode="json")["subsample"]["n"] == 10


@pytest.mark.parametrize("n", [120, 121, 481])
def test_exact_n_equal_shares_and_patient_level(tmp_path, n):
    rows = hospital_rows()
    config = study_config(tmp_path, design(n=[n], k=[1, 2]))
    for conf in config.configurations:
        sample = subsample_for(config, conf, rows)
        train = sample[sample["split"] == "train"]
        assert len(train) == n and train["image_id"].is_unique
        shares = train["dataset"].value_counts().to_dict()
        assert shares == equal_shares(n, conf.train) and max(shares.values()) - min(shares.values()) <= 1
        # Only training-split images, so no drawn patient has a validation or test image in the sample.
        split_of = rows.set_index("image_id")["split"]
        assert (split_of[train["image_id"]] == "train").all()
        assert (split_of[sample.loc[sample["split"] == "val", "image_id"]] == "val").all()
        check_leakage(sample[["split"]], sample["patient_id"])
        # Patient by patient: at most one patient per source is cut short.
        drawn = train.groupby("patient_id").size()
        whole = rows[rows["split"] == "train"].groupby("patient_id").size()
        assert int((drawn < whole[drawn.index]).sum()) <= len(conf.train)


def test_identical_on_reruns_and_nested_across_sizes(tmp_path):
    config = study_config(tmp_path, design())
    first = subsample_for(config, config.configuration("sm-n480-k2-alpha.beta-r0"), hospital_rows())
    again = subsample_for(config, config.configuration("sm-n480-k2-alpha.beta-r0"), hospital_rows().sample(frac=1))
    pd.testing.assert_frame_equal(first, again)
    small = subsample_for(config, config.configuration("sm-n120-k2-alpha.beta-r0"), hospital_rows())
    big_train = set(first.loc[first["split"] == "train", "image_id"])
    assert set(small.loc[small["split"] == "train", "image_id"]) <= big_train
    other = subsample_for(config, config.configuration("sm-n480-k2-alpha.beta-r1"), hospital_rows())
    assert set(other["image_id"]) != set(first["image_id"])  # another replicate, another draw
    # Hash-keyed, not keyed by global random state or library version: pinned, as any other machine must see it.
    digest = hashlib.sha256(",".join(small["image_id"]).encode()).hexdigest()[:12]
    assert digest == PINNED


PINNED = "a509748be0e7"  # the first draw ever made of hospital_rows(); any machine must match it


def test_matched_prevalence_within_one_point(tmp_path):
    rows = hospital_rows()
    config = study_config(tmp_path, design(match_prevalence=True, n=[200]))
    pooled = pooled_prevalence(rows[rows["split"] == "train"], LABELS)
    for conf in config.configurations:
        sample = subsample_for(config, conf, rows)
        train = rows.set_index("image_id").loc[sample.loc[sample["split"] == "train", "image_id"]]
        assert len(train) == 200
        for dataset, part in train.groupby("dataset"):
            for label in LABELS:
                assert abs(part[label].mean() - pooled[label]) <= 0.01, (conf.name, dataset, label)
    unmatched = subsample_for(
        config, config.configuration("sm-n200-k1-alpha-r0").model_copy(
            update={"subsample": config.configuration("sm-n200-k1-alpha-r0").subsample.model_copy(
                update={"match_prevalence": False})}), rows)  # fmt: skip
    alpha = rows.set_index("image_id").loc[unmatched.loc[unmatched["split"] == "train", "image_id"]]
    assert abs(alpha["Cardiomegaly"].mean() - pooled["Cardiomegaly"]) > 0.05  # matching did something


def test_too_large_n_fails_with_the_dataset(tmp_path):
    config = study_config(tmp_path, design(n=[5000], k=[1]))
    with pytest.raises(CxrgenError, match="dataset 'alpha' has"):
        subsample_for(config, config.configurations[0], hospital_rows())


def test_learning_curve_and_step_budget(tmp_path):
    rows = hospital_rows()
    curve = {"learning_curve": {"source": "beta", "n": [100, 400, "all"]}}
    config = study_config(tmp_path, curve)
    names = [c.name for c in config.configurations]
    assert names == ["lc-beta-n100-r0", "lc-beta-n400-r0", "lc-beta-all-r0"]
    assert config.configurations[0].external == ["alpha", "gamma", "delta"]
    every = subsample_for(config, config.configuration("lc-beta-all-r0"), rows)
    n_all = int(((rows["dataset"] == "beta") & (rows["split"] == "train")).sum())
    assert (every["split"] == "train").sum() == n_all
    # One budget for every size: max_epochs x ceil(n_max / batch_size), n_max the full source here.
    budgets = {planned_steps(config, c.subsample, rows) for c in config.configurations}
    assert budgets == {config.train.max_epochs * -(-n_all // config.train.batch_size)}
    fixed = LearningCurveDesign(source="beta", n=[10], steps=77).configurations(["beta"])[0]
    assert fixed.subsample is not None and planned_steps(config, fixed.subsample, rows) == 77


def test_plan_lists_images_per_source_and_steps(tmp_path):
    rows = hospital_rows()
    config = study_config(tmp_path, design(n=[121], k=[2], replicates=1))
    table = plan_table(config, rows.drop(columns="split"), rows[["image_id", "dataset", "split"]])
    assert len(table) == 3 and (table["train img"] == 121).all()
    assert table.loc[0, "train img per source"] == "alpha 61, beta 60"
    assert (table["steps"] == str(config.train.max_epochs * -(-121 // config.train.batch_size))).all()


def test_draw_needs_a_subsample():
    conf = SizeMatchedDesign(sources=SOURCES, n=[10], k=[1]).configurations()[0].model_copy(update={"subsample": None})
    with pytest.raises(CxrgenError, match="no subsample"):
        draw_subsample(hospital_rows(), conf, LABELS)
