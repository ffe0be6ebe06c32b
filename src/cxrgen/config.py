"""The study YAML as typed models.

YAML only fills the models: unknown keys, duplicate keys and wrong types are errors that name the key and the
file. Relative paths resolve against the folder of the YAML file, so a study folder can be moved whole.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cxrgen.errors import CxrgenError
from cxrgen.labels import PAPER_LABELS, BlankPolicy, Policy

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(CxrgenError, ValueError):
    """A study file that cannot be used; the message names the file and the key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _safe_name(value: str) -> str:
    # Names end up in output paths (runs/<configuration>/<arch>/), so they may not carry separators or "..".
    if not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"{value!r} is not a safe name (letters, digits, '_', '-', '.'; at most 64 characters)")
    return value


class DatasetConfig(StrictModel):
    """One dataset copy on disk and the reader that understands it (see ``cxrgen.sources``)."""

    reader: str
    root: Path
    csv: str | None = Field(default=None, description="CheXpert: which CSV (train.csv, valid.csv, ...)")
    labels: Literal["chexpert", "negbio", "radiologist"] | None = Field(
        default=None, description="MIMIC: label file (radiologist: the 2.1.0 test-set labels)"
    )
    metadata: str | None = Field(default=None, description="NIH: Data_Entry file name, found when omitted")

    def options(self) -> dict[str, Any]:
        """Reader keyword arguments that were set."""
        pairs = (("csv", self.csv), ("labeler", self.labels), ("metadata", self.metadata))
        return {key: value for key, value in pairs if value}


class SplitConfig(StrictModel):
    """How one dataset is divided into train / val / test.

    ``random``: patient-level buckets from a hash of the namespaced patient id and the seed.
    ``official``: the dataset's own split (NIH lists, MIMIC split file); for NIH the validation patients are
    carved from train_val with ``val_fraction`` of its patients.
    """

    method: Literal["random", "official"] = "random"
    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.72, "val": 0.08, "test": 0.20})
    seed: int = 0
    val_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - {"train", "val", "test"}
        if unknown:
            raise ValueError(f"fractions keys must be train, val, test; got {sorted(unknown)}")
        if any(v < 0 for v in value.values()) or abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be non-negative and sum to 1, got {value}")
        return value


class PreprocessConfig(StrictModel):
    clahe: bool = True
    engine: Literal["skimage", "opencv"] = "skimage"
    size: int | None = Field(default=None, gt=7, description="override every architecture's input size")


class TrainConfig(StrictModel):
    batch_size: int = Field(default=32, gt=0)
    lr: float = Field(default=1.0e-3, gt=0)
    lr_decay: float = Field(default=1.0e-5, ge=0)
    epsilon: float = Field(default=1.0e-7, gt=0)
    max_epochs: int = Field(default=10, gt=0)
    patience: int = Field(default=3, gt=0)
    accumulate: int = Field(default=1, gt=0)
    flip: float = Field(default=0.5, ge=0, le=1)
    seed: int = 0
    pretrained: bool = True
    weights: dict[str, Path] = Field(default_factory=dict, description="arch -> local pretrained weights file")
    weights_sha256: dict[str, str] = Field(default_factory=dict)
    keras_faithful: bool = True
    num_workers: int = Field(default=2, ge=0)
    precision: str | None = Field(default=None, description="Lightning precision; None: bf16-mixed on GPU")
    channels_last: bool = True
    deterministic: bool = False
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    limit_train_batches: int | float | None = None


@dataclass(frozen=True)
class TestSet:
    """A test set of a configuration: ``internal`` is the union of its internal datasets' test splits."""

    __test__ = False  # not a pytest class, despite its name

    name: str
    kind: Literal["internal", "external"]
    datasets: tuple[str, ...]


class Configuration(StrictModel):
    """One training configuration: which datasets train it and which test sets judge it."""

    name: str
    train: list[str]
    internal: list[str]
    external: list[str] = Field(default_factory=list)

    def test_sets(self) -> list[TestSet]:
        """``internal`` first, then one test set per external dataset, named after it."""
        internal = TestSet("internal", "internal", tuple(self.internal))
        return [internal, *(TestSet(d, "external", (d,)) for d in self.external)]

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _safe_name(value)


class ReferenceCell(StrictModel):
    arch: str
    configuration: str
    kind: Literal["internal", "external"]
    auc: dict[str, float]


class Reference(StrictModel):
    """Published numbers printed beside ours (the paper's Table 1 and dataset counts)."""

    source: str = ""
    table1: list[ReferenceCell] = Field(default_factory=list)
    counts: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ReviewConfig(StrictModel):
    """The error review of the paper's Table 2."""

    label: str = "Cardiomegaly"
    configuration: str | None = None
    test_set: str | None = None
    per_kind: int = Field(default=4, ge=1)


class EvalConfig(StrictModel):
    bootstrap: int = Field(default=1000, ge=0)
    ci: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 0
    protocols: list[str] = Field(
        default_factory=lambda: ["blank_ignore", "uncertain_ones", "uncertain_zeros", "uncertain_ignore"],
        description="label protocols the same predictions are re-scored under (cxrgen.shift.protocols.PROTOCOLS)",
    )


class StudyConfig(StrictModel):
    name: str
    out: Path
    datasets: dict[str, DatasetConfig]
    labels: list[str] = Field(default_factory=lambda: list(PAPER_LABELS))
    uncertainty: dict[str, Policy] = Field(default_factory=dict)
    blank: BlankPolicy = "zeros"
    views: Literal["all"] | list[str] = "all"
    splits: dict[str, SplitConfig] = Field(default_factory=dict)
    preprocess: PreprocessConfig = PreprocessConfig()
    architectures: list[str] = Field(default_factory=lambda: ["densenet121", "inception_resnet_v2"])
    train: TrainConfig = TrainConfig()
    evaluation: EvalConfig = EvalConfig()
    review: ReviewConfig = ReviewConfig()
    configurations: list[Configuration]
    reference: Reference | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _safe_name(value)

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, value: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        for name in value:
            _safe_name(name)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        known = set(self.datasets)
        for conf in self.configurations:
            for role in ("train", "internal", "external"):
                for ds in getattr(conf, role):
                    if ds not in known:
                        raise ValueError(f"configuration {conf.name!r} {role} names unknown dataset {ds!r}")
        for key in self.splits:
            if key not in known:
                raise ValueError(f"splits names unknown dataset {key!r}")
        for key in self.uncertainty:
            if key not in self.labels:
                raise ValueError(f"uncertainty names {key!r}, which is not in labels")
        names = [c.name for c in self.configurations]
        if len(set(names)) != len(names):
            raise ValueError(f"configuration names repeat: {names}")
        for arch in self.architectures:
            _safe_name(arch)
        return self

    def configuration(self, name: str) -> Configuration:
        """The configuration called ``name``; an unknown name fails with the closest known one."""
        names = [conf.name for conf in self.configurations]
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
            raise ConfigError(f"unknown configuration {name!r}{hint}")
        return self.configurations[names.index(name)]

    def split_for(self, dataset: str) -> SplitConfig:
        return self.splits.get(dataset, SplitConfig())

    def uncertainty_for(self, label: str) -> Policy:
        return self.uncertainty.get(label, "zeros")


def run_dir(study_dir: Path, configuration: str, arch: str) -> Path:
    """``<study>/runs/<configuration>/<arch>``: where one run's checkpoints, metrics and predictions live."""
    return Path(study_dir) / "runs" / configuration / arch


def validation_predictions_file(study_dir: Path, configuration: str, arch: str) -> Path:
    """``<run>/validation.parquet``: the run's validation predictions, where thresholds and temperatures are fitted."""
    return run_dir(study_dir, configuration, arch) / "validation.parquet"


def _check_duplicate_keys(node: yaml.Node, path: Path) -> None:
    """Raise on a mapping that repeats a key anywhere in the document (PyYAML keeps the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise ConfigError(
                    f"{path}: duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                    f"(first at line {seen[key]})"
                )
            seen[key] = key_node.start_mark.line + 1
            _check_duplicate_keys(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, path)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping safely, refusing duplicate keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read study file ({exc.strerror})") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_duplicate_keys(node, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def resolve(value: Any) -> Any:
        return str((base / Path(value).expanduser()).resolve()) if isinstance(value, str) else value

    data = dict(data)
    if "out" in data:
        data["out"] = resolve(data["out"])
    if isinstance(data.get("datasets"), dict):
        data["datasets"] = {
            name: {**ds, "root": resolve(ds["root"])} if isinstance(ds, dict) and "root" in ds else ds
            for name, ds in data["datasets"].items()
        }
    train = data.get("train")
    if isinstance(train, dict) and isinstance(train.get("weights"), dict):
        data["train"] = {**train, "weights": {k: resolve(v) for k, v in train["weights"].items()}}
    return data


def format_validation_error(exc: ValidationError, path: Path) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {message}")
    return f"{path}: " + "; ".join(parts)


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file; relative paths become absolute against its folder."""
    path = Path(path)
    data = _resolve_paths(read_yaml(path), path.resolve().parent)
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path)) from exc


def check_dataset_roots(config: StudyConfig, path: Path | str = "study file") -> None:
    """Fail with the key and file when a dataset root does not exist."""
    for name, ds in config.datasets.items():
        if not ds.root.is_dir():
            raise ConfigError(f"{path}: datasets.{name}.root: folder {ds.root} does not exist")


def dump_resolved(config: StudyConfig) -> str:
    """The resolved config as YAML (absolute paths, every default filled in)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
