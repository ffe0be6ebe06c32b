"""``reader: table``: any hospital's export, one table with a row per image, mapped by the study file.

The study file names the table and maps its columns (DESIGN.md section 8)::

    hannover:
      reader: table
      root: /data/hannover                 # images are found relative to this folder
      table: data.csv                      # .csv, .csv.gz, .tsv, .tsv.gz or .parquet, relative to root
      image: "png/{image_id}.png"          # a column holding a relative path, or a template over columns
      columns: {patient: patient_id, study: study_id, view: projection, sex: sex, age: age}
      labels: {Cardiomegaly: cardiomegaly, Pleural Effusion: effusion}      # optional: omitted = unlabelled
      values: {positive: [1, "yes"], negative: [0, "no"], uncertain: [-1, "u"]}

The delimiter of a text table (comma, semicolon or tab) is detected from its first lines. ``columns.patient`` is
required; without ``study`` every image is its own study; view, sex and age go through the vocabularies every
public reader uses (:func:`~cxrgen.sources.common.normalize_view`, :func:`~cxrgen.sources.common.normalize_sex`,
:func:`~cxrgen.sources.common.ages_in_years`), and view words outside the vocabulary are counted in one warning.
The image path (relative to ``root``, never leaving it) is also the image's native id, so ids stay unique.

A table without ``labels`` is unlabelled: every image's targets are NaN (``labelled`` False), and the study file
may use it only as an external test set (:class:`cxrgen.study.config.StudyConfig` refuses it elsewhere).
Label cells are matched against ``values`` (case-insensitive; ``1`` and ``1.0`` are one number); a blank cell is
NaN and any other word is an error naming the row, the column and the accepted words.
"""

from __future__ import annotations

import csv
import gzip
import string
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from cxrgen.sources.common import (
    SourceError,
    ages_in_years,
    assemble,
    check_relative_paths,
    check_unique_columns,
    normalize_sex,
    normalize_view,
    not_utf8,
)
from cxrgen.sources.registry import ReaderOptions, register

#: Suffixes a table may have, as its reader knows them.
TEXT_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")
DELIMITERS = ",;\t"
#: View words the vocabulary knows (upper-cased); others become OTHER and are counted in a warning.
KNOWN_VIEWS = frozenset({"PA", "AP", "LATERAL", "LAT", "LL", "RL"})
Value = int | float | str


class TableColumns(ReaderOptions):
    """Which column holds what; only ``patient`` is required."""

    patient: str
    study: str | None = None
    view: str | None = None
    sex: str | None = None
    age: str | None = None


class TableValues(ReaderOptions):
    """The words (or numbers) a label column uses for positive, negative and uncertain."""

    positive: list[Value] = Field(default_factory=lambda: list[Value]([1]))
    negative: list[Value] = Field(default_factory=lambda: list[Value]([0]))
    uncertain: list[Value] = Field(default_factory=lambda: list[Value]([-1]))


class TableOptions(ReaderOptions):
    table: str = Field(description="the table file, relative to root")
    image: str = Field(description="a column holding the image path, or a template such as 'png/{image_id}.png'")
    columns: TableColumns
    labels: dict[str, str] | None = Field(default=None, description="study label -> column; omitted = unlabelled")
    values: TableValues = TableValues()

    @field_validator("values")
    @classmethod
    def _distinct_values(cls, value: TableValues) -> TableValues:
        seen: dict[str, str] = {}
        for kind in ("positive", "negative", "uncertain"):
            for word in getattr(value, kind):
                key = value_key(word)
                if key in seen and seen[key] != kind:
                    raise ValueError(f"{word!r} is listed as {seen[key]} and as {kind}")
                seen[key] = kind
        return value

    def labelled(self) -> bool:
        """False when the table has no ``labels``: its images may only be tested, never trained on."""
        return self.labels is not None


def value_key(word: object) -> str:
    """The comparison form of a label cell or a ``values`` word: stripped, lower-case, numbers as numbers."""
    text = str(word).strip().lower()
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:g}" if np.isfinite(number) else text


def sniff_delimiter(path: Path) -> tuple[str, list[str]]:
    """Comma, semicolon or tab, from the table's first 64 KiB (csv.Sniffer; a single-column table: comma), and
    the header's column names as written."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            sample = handle.read(65536)
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable table ({exc})") from exc
    if not sample.strip():
        raise SourceError(f"{path}: empty table; expected a header line and a row per image")
    lines = sample.splitlines()
    # Sniff whole lines only: a sample cut inside a quoted cell confuses the sniffer.
    whole = "\n".join(lines[:-1] if len(lines) > 1 and not sample.endswith("\n") else lines)
    try:
        delimiter = csv.Sniffer().sniff(whole, delimiters=DELIMITERS).delimiter
    except csv.Error:
        counts = {d: lines[0].count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        delimiter = best if counts[best] else ","
    return delimiter, next(csv.reader([lines[0]], delimiter=delimiter), [])


def read_table(path: Path) -> tuple[pd.DataFrame, int]:
    """The table as text cells (blank = NA), and the file line of its first row (2 for text, 1 for parquet)."""
    if not path.is_file():
        raise SourceError(f"{path}: missing table (datasets.<name>.table)")
    name = path.name.lower()
    if name.endswith(".parquet"):
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: not a readable parquet table ({exc})") from exc
        text = frame.astype("string").astype(object).where(frame.notna(), None)
        return text, 1
    if not name.endswith(TEXT_SUFFIXES):
        raise SourceError(f"{path}: table must end in .csv, .tsv, .txt (optionally .gz) or .parquet")
    delimiter, header = sniff_delimiter(path)
    check_unique_columns(header, path)
    try:
        frame = pd.read_csv(
            path, sep=delimiter, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig"
        )
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise SourceError(f"{path}: not a readable table with delimiter {delimiter!r} ({exc})") from exc
    frame.columns = frame.columns.str.strip()
    return frame, 2


def template_fields(template: str) -> list[str]:
    """The column names a ``{column}`` template uses, in order."""
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise SourceError(f"image: {template!r} is not a valid template ({exc})") from None


def image_paths(frame: pd.DataFrame, image: str, source: Path, first_line: int = 2) -> pd.Series:
    """Each row's image path: the column ``image``, or the template filled from the row's cells."""
    if image in frame.columns:
        column = frame[image]
        blank = column.isna() | (column.astype(str).str.strip() == "")
        if blank.any():
            raise SourceError(
                f"{source}: row {int(np.flatnonzero(blank.to_numpy())[0]) + first_line}, column {image!r}: "
                "empty image path"
            )
        return column.astype(str).str.strip()
    fields = template_fields(image)
    if not fields:
        raise SourceError(
            f"{source}: image: {image!r} is neither a column of the table nor a template naming columns "
            f"such as 'png/{{image_id}}.png'; columns are {list(frame.columns)}"
        )
    unknown = [f for f in fields if f not in frame.columns]
    if unknown:
        raise SourceError(
            f"{source}: image: the template {image!r} names column(s) {', '.join(map(repr, unknown))}, which the "
            f"table does not have; columns are {list(frame.columns)}"
        )
    cells = frame[fields].astype("string").apply(lambda c: c.str.strip())
    blank = cells.isna() | (cells == "")
    if blank.to_numpy().any():
        row, col = (int(i[0]) for i in np.nonzero(blank.to_numpy()))
        raise SourceError(
            f"{source}: row {row + first_line}, column {fields[col]!r}: empty cell in the image template {image!r}"
        )
    return pd.Series(
        [image.format(**dict(zip(fields, values, strict=True))) for values in cells.itertuples(index=False)],
        index=frame.index,
        dtype=object,
    )


def raw_labels(column: pd.Series, name: str, values: TableValues, source: Path, first_line: int) -> pd.Series:
    """A label column's cells -> 1, 0, -1 or NaN (blank) through ``values``; another word is an error."""
    table = {value_key(w): code for code, words in ((1.0, values.positive), (0.0, values.negative),
                                                      (-1.0, values.uncertain)) for w in words}  # fmt: skip
    out = np.full(len(column), np.nan)
    for position, cell in enumerate(column.tolist()):
        if cell is None or (isinstance(cell, float) and np.isnan(cell)) or not str(cell).strip():
            continue  # blank: not mentioned
        code = table.get(value_key(cell))
        if code is None:
            accepted = {k: [str(w) for w in getattr(values, k)] for k in ("positive", "negative", "uncertain")}
            raise SourceError(
                f"{source}: row {position + first_line}, column {name!r}: label value {cell!r} is none of "
                f"{accepted} (datasets.<name>.values) or blank"
            )
        out[position] = code
    return pd.Series(out, index=column.index, dtype=float)


def table_views(values: pd.Series, source: Path) -> pd.Series:
    """View words through :func:`normalize_view`; words it does not know become OTHER, counted in one warning."""
    text = values.astype("string").str.strip().str.upper()
    unknown = text.notna() & (text != "") & ~text.isin(list(KNOWN_VIEWS))
    if unknown.any():
        counts = values[unknown.to_numpy()].astype(str).value_counts()
        listed = ", ".join(f"{word!r} x{count}" for word, count in counts.head(5).items())
        warnings.warn(
            f"{source}: {int(unknown.sum())} view value(s) outside {sorted(KNOWN_VIEWS)} became OTHER: {listed}",
            stacklevel=3,
        )
    return normalize_view(values)


@register("table", options=TableOptions)
def read(root: Path, *, name: str, labels: list[str], options: TableOptions) -> pd.DataFrame:
    """Read a hospital's table into manifest rows; raw labels in {1, 0, -1, NaN}, all NaN when unlabelled."""
    slashed = options.table.replace("\\", "/")
    if slashed.startswith("/") or ".." in slashed.split("/") or options.table[1:2] == ":":
        raise SourceError(f"datasets.{name}.table: {options.table!r} is absolute or leaves the dataset root {root}")
    source = root / options.table
    frame, first_line = read_table(source)
    if frame.empty:
        raise SourceError(f"{source}: no rows; expected a row per image")
    mapped = {f"columns.{key}": column for key, column in options.columns.model_dump().items() if column}
    mapped.update({f"labels.{label}": column for label, column in (options.labels or {}).items()})
    for key, column in mapped.items():
        if column not in frame.columns:
            raise SourceError(
                f"{source}: {key}: column {column!r} does not exist; expected one of {list(frame.columns)}"
            )
    stray = sorted(set(options.labels or {}) - set(labels))
    if stray:
        warnings.warn(f"{source}: labels {stray} are not among the study's labels {labels}; not read", stacklevel=2)
    paths = image_paths(frame, options.image, source, first_line).str.replace("\\", "/", regex=False)
    check_relative_paths(paths.reset_index(drop=True), source, first_line)
    duplicated = paths.duplicated(keep=False).to_numpy()
    if duplicated.any():
        rows = np.flatnonzero(paths.to_numpy() == paths.iloc[int(np.flatnonzero(duplicated)[0])])[:2] + first_line
        raise SourceError(
            f"{source}: rows {rows[0]} and {rows[1]}: image {paths.iloc[rows[0] - first_line]!r} (image: "
            f"{options.image!r}) is listed twice; expected each image once"
        )
    cols = options.columns
    patients = frame[cols.patient].astype("string").str.strip()
    no_patient = (patients.isna() | (patients == "")).to_numpy()
    if no_patient.any():
        row = int(np.flatnonzero(no_patient)[0]) + first_line
        raise SourceError(f"{source}: row {row}, column {cols.patient!r} (columns.patient): empty patient id")
    blank = pd.Series([""] * len(frame), index=frame.index, dtype=object)
    raw: dict[str, pd.Series] = {}
    for label in labels:
        column = (options.labels or {}).get(label)
        if column is None:
            if options.labels is not None:
                warnings.warn(f"{source}: labels has no column for {label!r}; {label} is NaN", stacklevel=2)
            raw[label] = pd.Series(np.nan, index=frame.index)
        else:
            raw[label] = raw_labels(frame[column], column, options.values, source, first_line)
    studies = frame[cols.study].fillna("").astype(str).str.strip() if cols.study else paths
    return assemble(
        dataset=name,
        native_ids=paths,
        paths=paths,
        patients=patients.astype(str),
        studies=studies,
        views=table_views(frame[cols.view], source) if cols.view else pd.Series("UNKNOWN", index=frame.index),
        sexes=normalize_sex(frame[cols.sex], source) if cols.sex else pd.Series("U", index=frame.index),
        ages=ages_in_years(frame[cols.age], source) if cols.age else pd.Series(np.nan, index=frame.index),
        official_split=None,
        raw=raw,
        source=source,
        labelled=pd.Series(options.labelled(), index=frame.index),
        age_bins=blank,
    )
