"""What every dataset reader shares: the manifest schema, value normalizers and path safety.

Readers know nothing of images or models: they turn a dataset's metadata files into rows of the manifest.
"""

from __future__ import annotations

import csv
import gzip
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cxrgen.errors import CxrgenError
from cxrgen.sources.labels import RAW_VALUES, raw_column

#: Columns every reader returns, before label policies are applied (``raw_<label>`` follow).
BASE_COLUMNS: tuple[str, ...] = (
    "dataset",
    "image_id",
    "path",
    "patient_id",
    "study_id",
    "view",
    "frontal",
    "sex",
    "age",
    "official_split",
)
#: Columns after the ``raw_<label>`` ones: ``device`` in {1, 0, NaN} (a support device such as a pacemaker is
#: in the image; NaN: the dataset does not record it, e.g. NIH) and ``labelled`` (False: the dataset lists the
#: image but has no label row for it, so its targets are NaN whatever the blank policy says) and ``age_bin`` (the
#: age as the dataset states it when it ships bins, e.g. BRAX's ``45-49``, whose midpoint is ``age``; else empty)
#: and ``bits_stored`` (the bit depth the dataset's table states for an image, e.g. PadChest's ``BitsStored_DICOM``,
#: by which a 16-bit PNG is scaled to [0, 1]; NaN: not stated, the file's own ``sBIT`` or 16 then).
EXTRA_COLUMNS: tuple[str, ...] = ("device", "labelled", "age_bin", "bits_stored")
#: ``DataFrame.attrs`` key under which a reader leaves :class:`ReadingNote` s for the cohort table.
READING_NOTES = "cxrgen_reading_notes"
#: ``DataFrame.attrs`` key under which a reader lists the study labels its dataset does not record at all (VinBigData's
#: Edema, any label outside the reader's vocabulary): their targets stay NaN whatever ``blank`` says.
NOT_RECORDED = "cxrgen_not_recorded"
VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL", "LL", "OTHER", "UNKNOWN")
FRONTAL_VIEWS = frozenset({"PA", "AP"})
MAX_AGE_YEARS = 120.0


class SourceError(CxrgenError, ValueError):
    """Metadata that cannot be read as the dataset ships it; the message names the file, row or column."""


@dataclass(frozen=True)
class ReadingNote:
    """Something a reader did to the rows that the cohort table must show, not only a warning.

    ``kind`` is ``left out`` (``rows`` metadata rows that never became manifest rows, e.g. PadChest's null
    ``Labels``) or ``note`` (a property of ``rows`` manifest rows, e.g. VinDr-CXR's images without patient ids).
    """

    kind: Literal["left out", "note"]
    rows: int
    text: str


def add_reading_note(frame: pd.DataFrame, note: ReadingNote) -> pd.DataFrame:
    """Attach ``note`` to a reader's result (``frame.attrs``), warn with the same words, and return the frame."""
    warnings.warn(f"{note.kind}: {note.rows} row(s): {note.text}", stacklevel=3)
    frame.attrs.setdefault(READING_NOTES, []).append(note)
    return frame


def mark_not_recorded(frame: pd.DataFrame, labels: Sequence[str], source: Path | str, dataset: str) -> pd.DataFrame:
    """Record that ``dataset`` never records ``labels`` (their raw values must be NaN): the manifest keeps their
    targets NaN under every policy, so they are masked out of the loss and the metrics, and the cohort table says
    "not recorded". One warning names them."""
    if labels:
        warnings.warn(
            f"{source}: {dataset} does not record {', '.join(map(repr, labels))}; NaN (not recorded), masked out of "
            "the loss and the metrics",
            stacklevel=3,
        )
        recorded = frame.attrs.setdefault(NOT_RECORDED, [])
        recorded.extend(label for label in labels if label not in recorded)
    return frame


#: Cell texts that mean "missing" in every reader's text columns, compared stripped and lower-cased: the released
#: PadChest table writes its missing cells as the literal text ``nan``.
MISSING_TEXTS: tuple[str, ...] = ("", "nan")


def blank_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Every text cell that is empty or ``nan`` (any case, spaces around) becomes NaN, in place; returns ``frame``."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            text = values.astype("string").str.strip().str.lower()
            missing = text.isin(list(MISSING_TEXTS)).fillna(False).to_numpy(dtype=bool)
            if missing.any():
                frame[column] = values.mask(missing)
    return frame


def read_csv_table(source: Path, what: str, **options: object) -> pd.DataFrame:
    """A metadata CSV (``.gz`` read as gzip) as text, missing cells (:func:`blank_missing`) as NaN.

    A file that is not UTF-8, not gzip though named ``.gz``, cut short, or not parseable is one
    :class:`SourceError` naming the file and ``what`` it should be; never a bare zlib or EOF error.
    """
    kwargs: dict[str, object] = {"dtype": str, "keep_default_na": False, "na_values": [""], "encoding": "utf-8-sig"}
    kwargs.update(options)
    try:
        frame = pd.read_csv(source, **kwargs)
    except UnicodeDecodeError as exc:
        raise not_utf8(source, exc) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise SourceError(f"{source}: not a readable {what} ({exc})") from exc
    except (EOFError, OSError, zlib.error) as exc:
        raise SourceError(f"{source}: not a readable {what}: {unreadable_reason(source, exc)}") from exc
    return blank_missing(frame)


def unreadable_reason(source: Path, exc: BaseException) -> str:
    """Why a table could not be read, in words: a ``.gz`` cut short or not gzip at all, else the error itself."""
    if source.suffix == ".gz":
        if isinstance(exc, EOFError):
            return f"the gzip stream ends early, the file is cut short ({exc})"
        if isinstance(exc, gzip.BadGzipFile):
            return f"not gzip data although named .gz ({exc})"
        if isinstance(exc, zlib.error):
            return f"corrupt gzip data ({exc})"
    return str(exc) or type(exc).__name__


def file_line(source: Path, record: int) -> int:
    """The line of ``source`` on which data record ``record`` (0-based, after the header) starts, counting quoted
    fields that span lines and skipping blank lines as pandas does; ``record + 2`` when it cannot be counted."""
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rt", encoding="utf-8-sig", errors="replace", newline="") as handle:
            reader = csv.reader(handle)
            seen, previous = -1, 0  # -1: the header
            for row in reader:
                if row:
                    if seen == record:
                        return previous + 1
                    seen += 1
                previous = reader.line_num
    except (OSError, EOFError, zlib.error, csv.Error):
        pass
    return record + 2


def at_line(source: Path | str, values: pd.Series | pd.DataFrame, position: int) -> str:
    """``line N``: where the row at ``position`` of ``values`` starts in ``source``. Readers keep the index
    ``read_csv`` gave (the record number) through their filters, so the line is the one the user finds in the file,
    not a position after rows were dropped or tables merged."""
    label = values.index[position]
    record = int(label) if isinstance(label, int | np.integer) else position
    return f"line {file_line(Path(source), record)}"


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SourceError(f"{path}: missing {what}")
    return path


def require_columns(frame: pd.DataFrame, columns: Sequence[str], source: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SourceError(f"{source}: missing column(s) {', '.join(map(repr, missing))}; found {list(frame.columns)}")


#: A ``..`` component anywhere in a path (after backslashes became slashes).
_CLIMBS = r"(?:^|/)\.\.(?:/|$)"


def check_relative_paths(paths: pd.Series, source: Path, first_line: int = 2) -> None:
    """Refuse absolute paths, paths that climb out of the dataset root, empty paths and NUL bytes.

    Rows are named by their file line (:func:`at_line`); in a parquet table, by row number from ``first_line``.
    Vectorized with pandas string operations (a ``Path`` per row
    cost about 1 s on NIH's 112,120 rows); the rules are those of :class:`~pathlib.PurePosixPath`.
    """
    text = paths.astype(str)

    def where(position: int) -> str:
        return f"row {position + first_line}" if source.suffix == ".parquet" else at_line(source, text, position)

    nul = text.str.contains("\x00", regex=False).to_numpy()
    if nul.any():
        position = int(np.flatnonzero(nul)[0])
        raise SourceError(f"{source}: {where(position)}: path {text.iloc[position]!r} contains a NUL byte")
    slashed = text.str.replace("\\", "/", regex=False)
    bad = (
        slashed.str.startswith("/") | (text.str[1:2] == ":") | slashed.str.contains(_CLIMBS, regex=True) | (text == "")
    ).to_numpy()
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise SourceError(
            f"{source}: {where(position)}: path {text.iloc[position]!r} is absolute or leaves the dataset "
            "root; expected a path relative to it"
        )


#: Sex words of the shipped tables (upper-cased) -> manifest code; anything else becomes ``U`` and is counted.
SEX_VOCABULARY: dict[str, str] = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"}
#: Words that mean "not recorded": they become ``U`` without a warning.
SEX_UNKNOWN: frozenset[str] = frozenset({"", "U", "UNKNOWN"})


def normalize_sex(
    values: pd.Series, source: Path | str | None = None, vocabulary: dict[str, str] = SEX_VOCABULARY
) -> pd.Series:
    """Exact words (any case, spaces stripped) -> M/F through ``vocabulary``; anything else -> U.

    Values outside the vocabulary and :data:`SEX_UNKNOWN` (``Missing``, ``Masked``, ``O``) become U and one warning
    counts them by value, so a new word in a table is seen rather than guessed from its first letter.
    """
    text = values.astype("string").str.strip().str.upper().fillna("")
    mapped = text.map(vocabulary)
    unexpected = mapped.isna() & ~text.isin(list(SEX_UNKNOWN))
    if unexpected.any():
        counts = values[unexpected.to_numpy()].astype(str).value_counts()
        listed = ", ".join(f"{word!r} x{count}" for word, count in counts.head(5).items())
        where = f"{source}: " if source is not None else ""
        warnings.warn(
            f"{where}{int(unexpected.sum())} sex value(s) outside {sorted(vocabulary)} became unknown (U): {listed}",
            stacklevel=2,
        )
    return mapped.fillna("U").astype(str)


def normalize_view(values: pd.Series) -> pd.Series:
    """Map native view names onto PA, AP, LATERAL, LL, OTHER, UNKNOWN."""
    text = values.astype("string").str.strip().str.upper()
    table = {"PA": "PA", "AP": "AP", "LATERAL": "LATERAL", "LAT": "LATERAL", "LL": "LL", "RL": "OTHER"}
    mapped = text.map(lambda v: table.get(v, "OTHER") if isinstance(v, str) and v else "UNKNOWN")
    return mapped.astype(str)


def ages_in_years(values: pd.Series, source: Path) -> pd.Series:
    """Parse ages given as numbers or as NIH 2017 strings (``058Y``, ``011M``, ``005D``) into float years.

    Ages below 0 or above 120 years are recording errors (NIH ships 16 above): they become NaN and one warning
    counts them.
    """
    text = values.astype("string").str.strip().str.upper()
    unit = text.str.extract(r"^\s*[0-9.]+\s*([YMDW]?)\s*$", expand=False).fillna("")
    number = pd.to_numeric(text.str.replace(r"[YMDW]$", "", regex=True), errors="coerce")
    bad = text.notna() & (text != "") & number.isna()
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise SourceError(
            f"{source}: {at_line(source, values, first)}"
            f": age {values.iloc[first]!r} is not a number of years"
        )
    divisor = unit.map({"": 1.0, "Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}).astype(float)
    years = number.astype(float) / divisor.to_numpy()
    negative, above = years < 0, years > MAX_AGE_YEARS
    impossible = negative | above
    if impossible.any():
        warnings.warn(
            f"{source}: {int(impossible.sum())} age(s) outside 0-{MAX_AGE_YEARS:g} years set to NaN "
            f"({int(negative.sum())} negative, {int(above.sum())} above {MAX_AGE_YEARS:g})",
            stacklevel=2,
        )
        years = years.mask(impossible)
    return years.astype(float)


def check_raw_labels(frame: pd.DataFrame, columns: Sequence[str], source: Path) -> None:
    """Raw label columns hold 1, 0, -1 or blank; anything else is named with its row and column."""
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = (frame[column].notna() & values.isna()) | (values.notna() & ~values.isin(list(RAW_VALUES)))
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise SourceError(
                f"{source}: {at_line(source, frame, first)}"
                f", column {column!r}: label value {frame[column].iloc[first]!r} "
                "is not one of 1, 0, -1 or blank"
            )


DEVICE_COLUMN = "Support Devices"


def device_presence(values: pd.Series) -> pd.Series:
    """A CheXpert-style ``Support Devices`` column -> 1 (mentioned), 0 (negated or not mentioned), NaN (uncertain).

    Reports name devices they see, so a blank is read as absent; an uncertain mention stays unknown.
    """
    raw = pd.to_numeric(values, errors="coerce")
    return raw.map({1.0: 1.0, 0.0: 0.0, -1.0: np.nan}).where(raw.notna(), 0.0).astype(float)


def assemble(
    *,
    dataset: str,
    native_ids: pd.Series,
    paths: pd.Series,
    patients: pd.Series,
    studies: pd.Series,
    views: pd.Series,
    frontal: pd.Series | None = None,
    sexes: pd.Series,
    ages: pd.Series,
    official_split: pd.Series | None,
    raw: dict[str, pd.Series],
    source: Path,
    device: pd.Series | None = None,
    labelled: pd.Series | None = None,
    age_bins: pd.Series | None = None,
    bits_stored: pd.Series | None = None,
) -> pd.DataFrame:
    """Build manifest rows with namespaced ids and check that image ids are unique.

    ``device``, ``labelled``, ``age_bins`` and ``bits_stored`` fill :data:`EXTRA_COLUMNS` (NaN, True, empty and
    NaN when the dataset cannot say; see :func:`stated_bits` for ``bits_stored``).
    """
    frame = pd.DataFrame(
        {
            "dataset": dataset,
            "image_id": (dataset + ":" + native_ids.astype(str)).to_numpy(),
            "path": paths.astype(str).to_numpy(),
            "patient_id": (dataset + ":" + patients.astype(str)).to_numpy(),
            "study_id": (dataset + ":" + studies.astype(str)).to_numpy(),
            "view": views.to_numpy(),
            "sex": sexes.to_numpy(),
            "age": ages.to_numpy(dtype=float),
            "official_split": (official_split.to_numpy() if official_split is not None else ""),
        }
    )
    is_frontal = frame["view"].isin(list(FRONTAL_VIEWS)) if frontal is None else frontal.to_numpy(dtype=bool)
    frame.insert(6, "frontal", is_frontal)
    for label, values in raw.items():
        frame[raw_column(label)] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    frame["device"] = np.nan if device is None else pd.to_numeric(device, errors="coerce").to_numpy(dtype=float)
    frame["labelled"] = True if labelled is None else labelled.to_numpy(dtype=bool)
    frame["age_bin"] = "" if age_bins is None else age_bins.fillna("").astype(str).str.strip().to_numpy()
    frame["bits_stored"] = np.nan if bits_stored is None else stated_bits(bits_stored).to_numpy()
    duplicated = frame["image_id"].duplicated(keep=False)
    if duplicated.any():
        dups = frame.loc[duplicated, "image_id"].unique()[:3]
        rows = np.flatnonzero((frame["image_id"] == dups[0]).to_numpy())[:2] + 2  # file line numbers
        raise SourceError(f"{source}: rows {rows[0]} and {rows[1]}: duplicate image id(s) {', '.join(dups)}")
    return frame.reset_index(drop=True)


#: The bit depths a table may state for a 16-bit container; any other value is not a depth and counts as unknown.
BIT_DEPTHS = range(1, 17)


def stated_bits(values: pd.Series) -> pd.Series:
    """A table's bit-depth cells as float: an integer from 1 to 16, else NaN (empty, ``nan``, text, 0, 12.5)."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    valid = numbers.isin([float(bits) for bits in BIT_DEPTHS])
    return numbers.where(valid)


def not_utf8(path: Path, exc: UnicodeDecodeError) -> SourceError:
    """The error for a metadata file with a byte that is not UTF-8: the file, the byte and what to do."""
    byte = exc.object[exc.start : exc.start + 1]
    return SourceError(f"{path}: not UTF-8 text: byte {byte!r} cannot be decoded ({exc.reason}); save it as UTF-8")


def read_text(path: Path) -> str:
    """A UTF-8 text file (a BOM is dropped); a byte that is not UTF-8 is named with the file."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None


def csv_header(path: Path) -> list[str]:
    """The first line of a CSV (gzipped or not) split into column names, as written."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except (OSError, EOFError, zlib.error) as exc:
        kind = "gzipped CSV" if path.suffix == ".gz" else "CSV"
        raise SourceError(f"{path}: not a readable {kind}: {unreadable_reason(path, exc)}") from exc
    return next(csv.reader([first]), [])


def check_unique_columns(header: Sequence[str], source: Path) -> None:
    """Refuse a header that names a column twice: pandas would rename the second copy and use the first."""
    names = [name.strip() for name in header if name.strip()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        listed = ", ".join(map(repr, repeated))
        raise SourceError(f"{source}: column name(s) {listed} appear more than once in the header; expected each once")
