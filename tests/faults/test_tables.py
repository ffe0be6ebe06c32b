"""Issue 14, metadata tables that lie: NUL bytes, non-UTF-8 bytes, repeated columns, sex and age values
outside their vocabulary, MIMIC tables that disagree or were cut short, and test sets with no image. Each is met
through the real ``cxrgen prepare`` on the synthetic hospitals, as a user would meet it.
"""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.faults import cxrgen, one_error

CHEX_CSV = Path("chexpert/CheXpert-v1.0-small/train.csv")
NIH_CSV = Path("nih/Data_Entry_2017_v2020.csv")
MIMIC = Path("mimic")


def flat(text: str) -> str:
    """Standard error with rich's line wrapping undone (warnings are logged through rich)."""
    return " ".join(text.split())


def prepare(data: Path, until: str = "manifest") -> subprocess.CompletedProcess[str]:
    return cxrgen("prepare", "study.yaml", "--until", until, "--workers", "1", cwd=data)


def edit_gz(path: Path, change: object) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = change(frame)  # type: ignore[operator]
    with gzip.open(path, "wt", newline="") as handle:
        frame.to_csv(handle, index=False)


def test_nul_byte_in_a_csv_path_is_refused_at_the_manifest_with_file_and_row(data: Path) -> None:
    lines = (data / CHEX_CSV).read_text().splitlines()
    lines[3] = lines[3].replace("view1", "view\x001", 1)
    (data / CHEX_CSV).write_text("\n".join(lines) + "\n")
    one_error(prepare(data), re.escape(str(data / CHEX_CSV)), r"line 4: path .* contains a NUL byte")
    assert not (data / "runs/tiny/manifest.parquet").exists()


@pytest.mark.parametrize(
    "relative", [NIH_CSV, Path("nih/test_list.txt"), MIMIC / "mimic-cxr-2.0.0-metadata.csv.gz"], ids=str
)
def test_non_utf8_byte_names_the_file(data: Path, relative: Path) -> None:
    path = data / relative
    if path.suffix == ".gz":
        raw = gzip.decompress(path.read_bytes()).replace(b"PA", b"P\xff", 1)
        path.write_bytes(gzip.compress(raw))
    elif path.name == "test_list.txt":
        path.write_bytes(b"\xff\xfe" + path.read_bytes())
    else:
        raw = path.read_bytes()
        path.write_bytes(raw.replace(b"Image Index", b"Image Ind\xe9x", 1))
    if not path.exists():
        pytest.skip(f"{relative} is not written by the synthetic generator")
    one_error(prepare(data), re.escape(str(path)), r"not UTF-8 text: byte b'\\x(ff|e9)'")


@pytest.mark.parametrize(
    "relative", [CHEX_CSV, NIH_CSV, MIMIC / "mimic-cxr-2.0.0-chexpert.csv.gz"], ids=["chexpert", "nih", "mimic"]
)
def test_duplicated_column_name_is_refused(data: Path, relative: Path) -> None:
    path = data / relative
    if path.suffix == ".gz":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame.insert(len(frame.columns), "Edema.copy", frame["Edema"])
        raw = frame.to_csv(index=False).replace("Edema.copy", "Edema", 1)
        path.write_bytes(gzip.compress(raw.encode()))
        column = "Edema"
    elif path == data / NIH_CSV:
        text = path.read_text()
        header, rest = text.split("\n", 1)
        path.write_text(header.replace("View Position", "Patient ID", 1) + "\n" + rest)
        column = "Patient ID"
    else:
        text = path.read_text()
        header, rest = text.split("\n", 1)
        rows = [line + ",1.0" for line in rest.splitlines()]
        path.write_text(header + ",Edema\n" + "\n".join(rows) + "\n")
        column = "Edema"
    one_error(prepare(data), re.escape(str(path)), rf"column name\(s\) '{column}' appear more than once")


def test_sex_words_outside_the_vocabulary_and_impossible_ages_are_counted_as_unknown(data: Path) -> None:
    frame = pd.read_csv(data / CHEX_CSV, dtype=str, keep_default_na=False)
    frame.loc[0:1, "Sex"] = "Missing"
    frame.loc[2, "Sex"] = "Masked"
    frame.loc[3, "Sex"] = "female"
    frame.loc[4, "Age"] = "-3"
    frame.loc[5, "Age"] = "200"
    frame.to_csv(data / CHEX_CSV, index=False)
    result = prepare(data)
    assert result.returncode == 0, result.stderr[-3000:]
    stderr = flat(result.stderr)
    assert re.search(r"3 sex value\(s\) outside .* became unknown \(U\): 'Missing' x2, 'Masked' x1", stderr), stderr
    assert re.search(r"2 age\(s\) outside 0-120 years set to NaN \(1 negative, 1 above 120\)", stderr), stderr
    manifest = pd.read_parquet(data / "runs/tiny/manifest.parquet")
    chex = manifest[manifest["dataset"] == "chexpert"].reset_index(drop=True)
    assert chex.loc[0:2, "sex"].tolist() == ["U", "U", "U"]
    assert chex.loc[3, "sex"] == "F"
    assert chex.loc[4:5, "age"].isna().all()
    assert (chex.loc[6:, "age"].dropna() >= 0).all()


def test_mimic_metadata_cut_short_is_refused_or_counted_when_allowed(data: Path) -> None:
    path = data / MIMIC / "mimic-cxr-2.0.0-metadata.csv.gz"
    raw = gzip.decompress(path.read_bytes())
    lines = raw.splitlines(keepends=True)
    keep = len(lines) // 2
    cut = b"".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2]  # a ragged last row, still valid gzip
    path.write_bytes(gzip.compress(cut))
    one_error(prepare(data), re.escape(str(path)), rf"line {keep + 1} has \d+ field\(s\), the header 12")

    path.write_bytes(gzip.compress(b"".join(lines[:keep])))  # cut at a row boundary: half of MIMIC missing
    missing = len(lines) - keep
    one_error(
        prepare(data), "metadata.csv.gz and -split.csv.gz disagree", rf"{missing} of {len(lines) - 1} split row\(s\)"
    )
    study = yaml.safe_load((data / "study.yaml").read_text())
    study["datasets"]["mimic"]["unmatched"] = "warn"
    (data / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    result = prepare(data)
    assert result.returncode == 0, result.stderr[-3000:]
    stderr = flat(result.stderr)
    counts = rf"0 of {keep - 1} metadata row\(s\) have no split row.*{missing} of {len(lines) - 1} split"
    assert re.search(counts, stderr), stderr
    manifest = pd.read_parquet(data / "runs/tiny/manifest.parquet")
    assert (manifest["dataset"] == "mimic").sum() == keep - 1


def test_mimic_split_rows_missing_for_some_images_are_refused(data: Path) -> None:
    path = data / MIMIC / "mimic-cxr-2.0.0-split.csv.gz"
    edit_gz(path, lambda frame: frame.iloc[3:])
    one_error(
        prepare(data), r"3 of \d+ metadata row\(s\) have no split row", r"0 of \d+ split row\(s\) have no metadata"
    )


def test_test_set_without_images_is_refused_at_prepare(data: Path) -> None:
    no_test = lambda f: f.assign(split=f["split"].replace("test", "train"))  # noqa: E731
    edit_gz(data / MIMIC / "mimic-cxr-2.0.0-split.csv.gz", no_test)
    one_error(prepare(data, "splits"), r"configuration 'c1', test set 'mimic' \(external\): no test images", "mimic: 0")
    assert not (data / "runs/tiny/splits.parquet").exists()


def test_test_fraction_zero_is_refused_at_prepare_naming_the_internal_test_set(data: Path) -> None:
    study = yaml.safe_load((data / "study.yaml").read_text())
    zero = {"method": "random", "seed": 0, "fractions": {"train": 0.9, "val": 0.1, "test": 0.0}}
    study["splits"]["chexpert"] = study["splits"]["nih"] = zero
    (data / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    one_error(prepare(data, "splits"), r"test set 'internal' \(internal\): no test images", r"chexpert: 0, nih: 0")
