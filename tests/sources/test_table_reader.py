"""``reader: table``: a hospital's own export mapped by the study file (issue 23)."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cxrgen.sources import READERS
from cxrgen.sources.common import SourceError
from cxrgen.study.config import ConfigError, load_study
from helpers.faults import ARCH, LABELS, cxrgen, error_lines

#: A hospital's export with its own column names: 4 patients, 7 images, yes/no/maybe labels, German-style ';'.
ROWS = [
    # pid, exam, file, projection, gender, age, herz, erguss
    ("P1", "E1", "a1", "pa", "w", "61", "yes", "no"),
    ("P1", "E1", "a2", "lat", "w", "61", "yes", ""),
    ("P1", "E2", "a3", "ap", "w", "62", "no", "maybe"),
    ("P2", "E3", "b1", "PA", "m", "45", "no", "no"),
    ("P3", "E4", "c1", "AP", "", "", "Yes", "YES"),
    ("P4", "E5", "d1", "Liegend", "m", "70", "no", "yes"),
    ("P4", "E6", "d2", "pa", "m", "71", "NO", "no"),
]
HEADER = ("pid", "exam", "file", "projection", "gender", "alter", "herz", "erguss")
OPTIONS: dict[str, Any] = {
    "table": "export.csv",
    "image": "bilder/{pid}/{file}.png",
    "columns": {"patient": "pid", "study": "exam", "view": "projection", "sex": "gender", "age": "alter"},
    "labels": {"Cardiomegaly": "herz", "Pleural Effusion": "erguss"},
    "values": {"positive": ["yes"], "negative": ["no"], "uncertain": ["maybe"]},
}


def write_export(root: Path, delimiter: str = ";", name: str = "export.csv", images: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [delimiter.join(HEADER), *(delimiter.join(row) for row in ROWS)]
    text = "\n".join(lines) + "\n"
    if name.endswith(".gz"):
        (root / name).write_bytes(gzip.compress(text.encode()))
    elif name.endswith(".parquet"):
        pd.DataFrame(ROWS, columns=list(HEADER)).replace("", None).to_parquet(root / name)
    else:
        (root / name).write_text(text, encoding="utf-8")
    if images:
        rng = np.random.default_rng(0)
        for pid, _, file, *_ in ROWS:
            path = root / "bilder" / pid / f"{file}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(path)
    return root


def read(root: Path, **changes: Any) -> pd.DataFrame:
    return READERS["table"](root, name="hosp", labels=LABELS, options={**OPTIONS, **changes})


@pytest.mark.parametrize(
    ("delimiter", "name"), [(";", "export.csv"), (",", "export.csv"), ("\t", "export.tsv"), (";", "export.csv.gz"),
                            (",", "export.parquet")],
)  # fmt: skip
def test_renamed_columns_and_yes_no_values_are_read_exactly(tmp_path: Path, delimiter: str, name: str) -> None:
    root = write_export(tmp_path / "h", delimiter, name)
    with pytest.warns(UserWarning) as caught:
        frame = read(root, table=name)
    messages = [str(w.message) for w in caught]
    assert any("1 view value(s)" in m and "'Liegend' x1" in m for m in messages), messages
    assert any("labels has no column for 'Atelectasis'" in m for m in messages), messages
    assert len(frame) == 7 and frame["patient_id"].nunique() == 4 and frame["study_id"].nunique() == 6
    assert frame["image_id"].iloc[0] == "hosp:bilder/P1/a1.png" and frame["path"].iloc[0] == "bilder/P1/a1.png"
    assert frame["patient_id"].iloc[3] == "hosp:P2"
    assert frame["view"].tolist() == ["PA", "LATERAL", "AP", "PA", "AP", "OTHER", "PA"]
    assert frame["frontal"].sum() == 5
    assert frame["sex"].tolist() == ["U", "U", "U", "M", "U", "M", "M"]  # 'w' is not in the vocabulary
    assert frame["age"].tolist()[:4] == [61.0, 61.0, 62.0, 45.0] and np.isnan(frame["age"].iloc[4])
    assert frame["raw_Cardiomegaly"].tolist() == [1, 1, 0, 0, 1, 0, 0]
    assert frame["raw_Pleural Effusion"].fillna(9).tolist() == [0, 9, -1, 0, 1, 1, 0]
    assert frame["raw_Edema"].isna().all() and frame["labelled"].all()


def test_sex_words_outside_the_vocabulary_are_counted(tmp_path: Path) -> None:
    root = write_export(tmp_path / "h")
    with pytest.warns(UserWarning, match=r"3 sex value\(s\) .* became unknown \(U\): 'w' x3"):
        read(root)


def test_without_labels_a_table_is_unlabelled_and_only_an_external_test_set(tmp_path: Path) -> None:
    root = write_export(tmp_path / "h")
    options = {k: v for k, v in OPTIONS.items() if k not in ("labels", "values")}
    frame = READERS["table"](root, name="hosp", labels=LABELS, options=options)
    assert not frame["labelled"].any() and frame[[f"raw_{label}" for label in LABELS]].isna().all().all()
    study = {
        "name": "s", "out": "out", "labels": LABELS, "architectures": [ARCH],
        "datasets": {"a": {"reader": "table", "root": "a", **options},
                     "hosp": {"reader": "table", "root": "h", **options}},
        "configurations": [{"name": "c", "train": ["a"], "internal": ["a"], "external": ["hosp"]}],
    }  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError, match=r"configurations\[0\] \('c'\)\.train names \['a'\], which has no labels "
                                          r"\(datasets\.a\.labels is not given\)"):  # fmt: skip
        load_study(tmp_path / "study.yaml")
    study["datasets"]["a"] = {"reader": "table", "root": "a", **OPTIONS}  # type: ignore[index]
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    config = load_study(tmp_path / "study.yaml")
    assert not config.datasets["hosp"].labelled() and config.datasets["a"].labelled()
    assert config.split_for("hosp").fractions == {"train": 0.0, "val": 0.0, "test": 1.0}  # external: used whole
    assert config.split_for("a").fractions == {"train": 0.72, "val": 0.08, "test": 0.20}


def _rewrite(root: Path, edit: Any) -> None:
    frame = pd.read_csv(root / "export.csv", sep=";", dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(root / "export.csv", sep=";", index=False)


@pytest.mark.parametrize(
    ("changes", "edit", "pattern"),
    [
        ({"columns": {"patient": "pid", "view": "ansicht"}}, None,
         r"export\.csv: columns\.view: column 'ansicht' does not exist; expected one of \['pid', 'exam'"),
        ({"labels": {"Edema": "oedem"}}, None, r"export\.csv: labels\.Edema: column 'oedem' does not exist"),
        ({"image": "bilder/{patient}/{file}.png"}, None,
         r"export\.csv: image: the template 'bilder/\{patient\}/\{file\}\.png' names column\(s\) 'patient', which "
         r"the table does not have"),
        ({"image": "bilder/x.png"}, None, r"image: 'bilder/x\.png' is neither a column of the table nor a template"),
        ({"image": "{file}"}, lambda f: f.__setitem__("file", f["file"].where(f.index != 2, "../../etc/passwd")),
         r"export\.csv: line 4: path '\.\./\.\./etc/passwd' is absolute or leaves the dataset root"),
        ({"image": "file"}, lambda f: f.__setitem__("file", f["file"].where(f.index != 1, "/etc/passwd")),
         r"export\.csv: line 3: path '/etc/passwd' is absolute or leaves the dataset root"),
        ({}, lambda f: f.__setitem__("file", f["file"].where(f.index != 2, "a1")),
         r"export\.csv: rows 2 and 4: image 'bilder/P1/a1\.png' \(image: 'bilder/\{pid\}/\{file\}\.png'\) is "
         r"listed twice; expected each image once"),
        ({}, lambda f: f.__setitem__("erguss", f["erguss"].where(f.index != 5, "vielleicht")),
         r"export\.csv: row 7, column 'erguss': label value 'vielleicht' is none of \{'positive': \['yes'\]"),
        ({"image": "{file}"}, lambda f: f.__setitem__("pid", f["pid"].where(f.index != 0, "")),
         r"export\.csv: row 2, column 'pid' \(columns\.patient\): empty"),
        ({"table": "../export.csv"}, None, r"datasets\.hosp\.table: '\.\./export\.csv' is absolute or leaves"),
        ({"table": "nothere.csv"}, None, r"nothere\.csv: missing table"),
    ],
)  # fmt: skip
def test_bad_input_is_one_error_naming_file_row_and_column(
    tmp_path: Path, changes: dict[str, Any], edit: Any, pattern: str
) -> None:
    root = write_export(tmp_path / "h", images=False)
    if edit is not None:
        _rewrite(root, edit)
    with pytest.raises(SourceError, match=pattern) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the view and sex warnings of the rows read before the error
        read(root, **changes)
    assert "\n" not in str(caught.value)


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    root = write_export(tmp_path / "h", images=False)
    text = (root / "export.csv").read_text().replace("alter", "gender", 1)
    (root / "export.csv").write_text(text)
    with pytest.raises(SourceError, match=r"export\.csv: column name\(s\) 'gender' appear more than once"):
        read(root)


def tiny_study(tmp_path: Path, **dataset: Any) -> Path:
    """Two copies of the export: ``a`` trains, ``hosp`` is the external test set; 32 px caches."""
    write_export(tmp_path / "a")
    write_export(tmp_path / "h")
    study = {
        "name": "s", "out": "out", "labels": LABELS, "architectures": [ARCH],
        "preprocess": {"size": 32, "engine": "opencv"},
        "splits": {"a": {"fractions": {"train": 0.5, "val": 0.0, "test": 0.5}}},
        "datasets": {"a": {"reader": "table", "root": "a", **OPTIONS},
                     "hosp": {"reader": "table", "root": "h", **OPTIONS, **dataset}},
        "configurations": [{"name": "c", "train": ["a"], "internal": ["a"], "external": ["hosp"]}],
    }  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return tmp_path / "study.yaml"


def test_a_partial_copy_is_left_out_counted_and_never_cached(tmp_path: Path) -> None:
    from cxrgen.runner.prepare import run_prepare
    from cxrgen.study.workspace import Study

    path = tiny_study(tmp_path)
    (tmp_path / "h/bilder/P1/a2.png").unlink()
    (tmp_path / "h/bilder/P4/d2.png").unlink()
    study = Study.load(path)
    with pytest.warns(UserWarning, match=r"dataset hosp: left out: 2 image\(s\) listed but not on disk under .*"
                                         r"bilder/P1/a2\.png, bilder/P4/d2\.png"):  # fmt: skip
        prepared = run_prepare(study, until="cache", workers=1)
    assert prepared.cohort is not None and prepared.splits is not None
    cohort = prepared.cohort.set_index(["dataset", "split"])
    assert cohort.loc[("hosp", "all"), "images"] == 5 and cohort.loc[("hosp", "all"), "patients"] == 4
    assert cohort.loc[("hosp", "test"), "images"] == 5  # an external set nobody trains on: used whole
    assert cohort.loc[("hosp", "left out"), "images"] == 2
    assert "bilder/P1/a2.png, bilder/P4/d2.png" in cohort.loc[("hosp", "left out"), "note"]
    assert cohort.loc[("a", "all"), "images"] == 7
    manifest = pd.read_parquet(study.dir.manifest)
    assert "hosp:bilder/P1/a2.png" not in set(manifest["image_id"])
    assert pd.read_csv(study.dir.excluded).empty  # never "failed to decode"
    index = pd.read_parquet(study.dir.path / "cache" / "hosp-32-opencv" / "index.parquet")
    assert len(index) == 5 and index["ok"].all() and "bilder/P4/d2.png" not in set(index["path"])
    assert len(np.load(study.dir.path / "cache" / "hosp-32-opencv" / "images.npy", mmap_mode="r")) == 5


def test_missing_images_error_makes_a_partial_copy_fatal(tmp_path: Path) -> None:
    path = tiny_study(tmp_path, missing_images="error")
    (tmp_path / "h/bilder/P3/c1.png").unlink()
    result = cxrgen("plan", path, cwd=tmp_path)
    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "datasets.hosp: 1 of 7 image(s) its metadata lists are not on disk" in lines[0]
    assert "(missing_images: error), e.g. bilder/P3/c1.png" in lines[0]


def test_plan_says_an_untrained_dataset_is_used_whole(tmp_path: Path) -> None:
    path = tiny_study(tmp_path)
    result = cxrgen("plan", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hosp 7/4" in result.stdout
    assert "hosp: no configuration trains on it: an external test set used whole" in result.stdout
