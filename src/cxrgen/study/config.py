"""The study YAML as typed models.

YAML only fills the models: unknown keys, duplicate keys and wrong types are errors that name the key and the
file. Relative paths resolve against the folder of the YAML file, so a study folder can be moved whole.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from cxrgen.errors import CxrgenError, validation_errors
from cxrgen.sources.labels import PAPER_LABELS, BlankPolicy, Policy
from cxrgen.study.layout import RESOLVED_CONFIG

if TYPE_CHECKING:  # models pull in timm and torch; the study file needs neither
    from cxrgen.models.registry import ArchSpec

#: The resolved study file every ``prepare`` writes into ``out``.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


#: Seeds numpy, torch and Lightning all accept: a seed outside 0..2**32-1 is refused when the study file is read,
#: not after another seed has trained.
MAX_SEED = 2**32 - 1


class ConfigError(CxrgenError, ValueError):
    """A study file that cannot be used; the message names the file and the key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _safe_name(value: str) -> str:
    # Names end up in output paths (runs/<configuration>/<arch>/), so they may not carry separators or "..".
    if not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"{value!r} is not a safe name (letters, digits, '_', '-', '.'; at most 64 characters)")
    return value


class DatasetConfig(BaseModel):
    """One dataset copy on disk and the reader that understands it.

    Every key beside ``reader`` and ``root`` belongs to the reader: it is checked against the options model the
    reader registered (:mod:`cxrgen.sources.registry`), so a new reader brings its own keys and the study file
    stays flat (``{reader: mimic, root: ..., labels: negbio}``).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    reader: str
    root: Path
    missing_images: Literal["leave_out", "error"] = Field(
        default="leave_out",
        description="images the metadata lists but the disk lacks: left out (counted in the cohort table) or fatal",
    )

    @model_validator(mode="after")
    def _reader_options(self) -> DatasetConfig:
        from cxrgen.sources import get_reader

        get_reader(self.reader).parse_options(self.options())
        return self

    def options(self) -> dict[str, Any]:
        """The reader's keys as the study file gave them."""
        return dict(self.model_extra or {})

    def labelled(self) -> bool:
        """False for a dataset without labels (``reader: table`` with no ``labels`` key): an external test set only."""
        from cxrgen.sources import get_reader

        return get_reader(self.reader).parse_options(self.options()).labelled()

    def fingerprint(self) -> dict[str, Any]:
        """The dataset's part of a run fingerprint: every key but ``root``, in the shape runs have recorded it
        since before readers owned their options (each known option key present, None when unset), so a
        study's existing runs keep resuming."""
        options = self.options()
        return {"reader": self.reader, **{key: options.pop(key, None) for key in FINGERPRINT_OPTION_KEYS}, **options}


#: Keys of a dataset entry that belong to every reader, not to the reader's options model.
DATASET_KEYS = ("reader", "root", "missing_images")
#: Option keys of every dataset entry in run fingerprints written before readers owned their options.
FINGERPRINT_OPTION_KEYS = ("csv", "labels", "metadata", "unmatched", "labelled_by", "readers", "images")


def _check_reader_options(data: dict[str, Any], path: Path) -> None:
    """Each dataset entry's reader keys against its reader's options model, named as ``datasets.<name>.<key>``
    (validation inside the model could only name the entry)."""
    from cxrgen.sources import SourceError, get_reader

    datasets = data.get("datasets")
    if not isinstance(datasets, dict):
        return
    for name, entry in datasets.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("reader"), str):
            continue  # the model reports a malformed entry
        try:
            spec = get_reader(entry["reader"])
        except SourceError as exc:
            raise ConfigError(f"{path}: datasets.{name}.reader: {exc}") from None
        options = {k: v for k, v in entry.items() if k not in DATASET_KEYS}
        try:
            spec.options.model_validate(options)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {validation_errors(exc, prefix=f'datasets.{name}.')}") from None


#: The split of a dataset that no configuration trains on, unless the study file gives one: all of it is test.
WHOLE_TEST = {"train": 0.0, "val": 0.0, "test": 1.0}


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
    """How the cache is made (engines in :mod:`cxrgen.images.preprocess`).

    ``engine: torch`` is the ``exact`` arithmetic in torch, batched (:mod:`cxrgen.images.gpu`), for JPEG
    datasets; ``device`` says where it runs. An engine, not a device switch on ``exact``: its pixels agree with
    ``exact`` within 1/255, not bit for bit, so it needs a cache of its own (``<dataset>-<size>-torch``), and
    every stage that opens the cache finds it by the engine name alone. The device enters that cache's
    fingerprint and ``meta.json`` (switching it rebuilds the cache); whether CUDA is present is checked when
    ``prepare`` builds the cache, not here, so a study made for a GPU node still loads on a CPU login node.
    """

    clahe: bool = True
    engine: Literal["skimage", "opencv", "exact", "torch"] = "exact"
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="where engine torch runs")
    size: int | None = Field(default=None, gt=7, description="override every architecture's input size")

    @model_validator(mode="after")
    def _device_is_for_torch(self) -> PreprocessConfig:
        if self.device != "cpu" and self.engine != "torch":
            raise ValueError(f"preprocess.device: {self.device} needs engine: torch (engine is {self.engine})")
        return self

    @model_serializer(mode="wrap")
    def _dump_device_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Run fingerprints hash this dump: studies from before ``device`` existed keep theirs.
        data = dict(handler(self))
        if self.device == "cpu":
            data.pop("device", None)
        return data


class TrainConfig(StrictModel):
    batch_size: int = Field(default=32, gt=0)
    lr: float = Field(default=1.0e-3, gt=0)
    lr_decay: float = Field(default=1.0e-5, ge=0)
    epsilon: float = Field(default=1.0e-7, gt=0)
    max_epochs: int = Field(default=10, gt=0)
    patience: int = Field(default=3, gt=0)
    accumulate: int = Field(default=1, gt=0)
    flip: float = Field(default=0.5, ge=0, le=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="training seed (numpy's range 0..2**32-1)")
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = Field(
        default=None, min_length=1, description="training seeds; default [seed]; each in 0..2**32-1"
    )
    pretrained: bool = True
    weights: dict[str, Path] = Field(default_factory=dict, description="arch -> local pretrained weights file")
    weights_sha256: dict[str, str] = Field(default_factory=dict)
    keras_faithful: bool = True
    num_workers: int = Field(default=2, ge=0)
    precision: str | None = Field(default=None, description="Lightning precision; None: bf16-mixed on GPU")
    channels_last: bool = True

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError(f"train.seeds repeats a seed: {seeds}")
        return seeds

    def seed_list(self) -> list[int]:
        """The training seeds: ``seeds``, or ``[seed]`` when it is not given. Every seed is a run of its own."""
        return list(self.seeds) if self.seeds is not None else [self.seed]

    deterministic: bool = False
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    limit_train_batches: int | float | None = None
    tensorboard: bool = Field(default=True, description="TensorBoard event files in <run>/tensorboard/")


class Subsample(StrictModel):
    """The recorded training subsample of a size-matched or learning-curve configuration (issue 25).

    ``n`` training images (None: every training image of the configuration's datasets) are drawn patient by
    patient from the configuration's ``train`` datasets in equal shares (the first ``n % k`` datasets, in the
    order of ``train``, get one more), keyed by ``seed`` and ``replicate`` (:mod:`cxrgen.data.subsample`). The same
    seed gives the same images on every machine; the draw is written to ``runs/<configuration>/subsample.parquet``.

    ``match_prevalence`` subsamples each dataset to the pooled training prevalence of ``pool`` per label (within
    one percentage point). Fine-tuned runs train exactly ``steps`` optimizer steps whatever ``n`` is (no early
    stopping); None is the rule ``train.max_epochs x ceil(n_max / train.batch_size)``, ``n_max`` the design's
    largest size (None: every training image of ``pool``), so every size of a comparison gets the same budget.
    """

    design: Literal["size_matched", "learning_curve"]
    n: int | None = Field(gt=0)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    replicate: int = Field(default=0, ge=0)
    match_prevalence: bool = False
    pool: list[str] = Field(min_length=1)
    steps: int | None = Field(default=None, gt=0)
    n_max: int | None = Field(default=None, gt=0)


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
    subsample: Subsample | None = Field(default=None, description="set by size_matched and learning_curve designs")

    @model_serializer(mode="wrap")
    def _dump_subsample_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Run fingerprints hash this dump: configurations from before ``subsample`` existed keep theirs.
        data = dict(handler(self))
        if self.subsample is None:
            data.pop("subsample", None)
        return data

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


class VerifyConfig(StrictModel):
    """What the verify stage accepts as an image (see :func:`cxrgen.data.verify.verify_manifest`)."""

    max_pixels: int = Field(
        default=40_000_000, gt=0, le=100_000_000,
        description="images declaring more pixels are excluded before decoding (default about 6,300 x 6,300)",
    )  # fmt: skip


EstimateMethod = Literal["cbpe", "atc", "doc", "cm_atc", "cm_doc", "em_prevalence", "agreement"]
ESTIMATE_METHODS: tuple[EstimateMethod, ...] = ("cbpe", "atc", "doc", "cm_atc", "cm_doc", "em_prevalence", "agreement")


class EstimateConfig(StrictModel):
    """``evaluation.estimate``: label-free performance estimates (issue 24, :mod:`cxrgen.shift.estimates`).

    Run on every unlabelled external test set; on labelled ones too when ``labelled`` is true, where each
    estimate is shown beside the truth (``results/estimates.csv``). ``enabled: false`` turns them off.
    """

    enabled: bool = True
    methods: list[EstimateMethod] = Field(default_factory=lambda: list(ESTIMATE_METHODS))
    calibrate: Literal["temperature", "isotonic"] = "temperature"
    labelled: bool = Field(default=False, description="also estimate on labelled external sets, beside the truth")


class EvalConfig(StrictModel):
    bootstrap: int = Field(default=1000, ge=0)
    ci: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 0
    protocols: list[str] = Field(
        default_factory=lambda: ["blank_ignore", "uncertain_ones", "uncertain_zeros", "uncertain_ignore"],
        description="label protocols the same predictions are re-scored under (cxrgen.shift.protocols.PROTOCOLS)",
    )
    estimate: EstimateConfig = EstimateConfig()


def _combination_name(prefix: str, datasets: Sequence[str], suffix: str) -> str:
    name = f"{prefix}-{'.'.join(datasets)}-{suffix}"
    if SAFE_NAME.match(name):
        return name
    digest = hashlib.sha256("+".join(datasets).encode()).hexdigest()[:8]
    return f"{prefix}-c{digest}-{suffix}"


class SizeMatchedDesign(StrictModel):
    """``design: {size_matched: ...}``: training sets of exactly ``n`` images from ``k`` sources in equal shares.

    Every size in ``n`` is crossed with every ``k`` and, for each ``k``, every combination of ``k`` sources
    (``combinations: all``) or a seeded choice of that many (the same combinations at every size), each drawn
    ``replicates`` times with another subsample seed. Configurations are named ``sm-n2000-k2-chexpert.nih-r0``.

    ``external: leave_out`` tests each configuration on every source it does not train on; the analysis then
    compares, per external hospital, only the configurations that never train on it, so the external set lies
    outside every training set of the comparison. ``external: [mimic]`` names hospitals outside ``sources``.
    """

    sources: list[str] = Field(min_length=2)
    n: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    k: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    combinations: Literal["all"] | Annotated[int, Field(gt=0)] = "all"
    replicates: int = Field(default=1, ge=1)
    external: Literal["leave_out"] | list[str] = "leave_out"
    match_prevalence: bool = False
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seed of the subsamples and chosen combinations")
    steps: int | None = Field(default=None, gt=0, description="optimizer steps of every fine-tuned run")

    @model_validator(mode="after")
    def _coherent(self) -> SizeMatchedDesign:
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"size_matched.sources names a dataset twice: {self.sources}")
        most = len(self.sources) - (1 if self.external == "leave_out" else 0)
        too_many = [k for k in self.k if k > most]
        if too_many:
            why = "one source must stay out as the external test set" if self.external == "leave_out" else ""
            raise ValueError(f"size_matched.k {too_many} exceeds the {most} usable sources {why}".rstrip())
        if isinstance(self.external, list):
            inside = [d for d in self.external if d in self.sources]
            if inside or not self.external:
                raise ValueError(f"size_matched.external must name hospitals outside sources, got {self.external}")
        for k in self.k:
            small = [n for n in self.n if n < k]
            if small:
                raise ValueError(f"size_matched.n {small} is smaller than k = {k}: a source would get no image")
        return self

    def combinations_for(self, k: int) -> list[tuple[str, ...]]:
        """The source combinations of size ``k``, in ``sources`` order (a seeded choice when ``combinations`` is
        a number)."""
        every = list(itertools.combinations(self.sources, k))
        if self.combinations == "all" or self.combinations >= len(every):
            return every
        rng = np.random.default_rng([self.seed, k, 25])
        chosen = sorted(rng.choice(len(every), size=self.combinations, replace=False).tolist())
        return [every[i] for i in chosen]

    def configurations(self) -> list[Configuration]:
        out = []
        for n in self.n:
            for k in self.k:
                for combo in self.combinations_for(k):
                    external = (
                        [d for d in self.sources if d not in combo] if self.external == "leave_out" else self.external
                    )
                    for replicate in range(self.replicates):
                        sample = Subsample(
                            design="size_matched", n=n, seed=self.seed, replicate=replicate,
                            match_prevalence=self.match_prevalence, pool=list(self.sources), steps=self.steps,
                            n_max=max(self.n),
                        )  # fmt: skip
                        name = _combination_name(f"sm-n{n}-k{k}", combo, f"r{replicate}")
                        out.append(Configuration(
                            name=name, train=list(combo), internal=list(combo), external=list(external),
                            subsample=sample,
                        ))  # fmt: skip
        return out


class LearningCurveDesign(StrictModel):
    """``design: {learning_curve: {source: nih, n: [1000, 4000, all]}}``: one source at growing sizes.

    Configurations ``lc-nih-n1000-r0`` ... ``lc-nih-all-r0`` train on ``n`` images of ``source`` (``all``: every
    training image), tested internally on ``source`` and externally on ``external`` (default: every other dataset
    of the study). Smaller sizes are the first images of the larger ones' draw (the same seed orders them).
    """

    source: str
    n: list[Annotated[int, Field(gt=0)] | Literal["all"]] = Field(min_length=1)
    external: list[str] | None = None
    replicates: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    steps: int | None = Field(default=None, gt=0)

    @field_validator("n")
    @classmethod
    def _distinct_sizes(cls, value: list[int | str]) -> list[int | str]:
        if len(set(value)) != len(value):
            raise ValueError(f"learning_curve.n repeats a size: {value}")
        return value

    def configurations(self, datasets: Sequence[str]) -> list[Configuration]:
        external = self.external if self.external is not None else [d for d in datasets if d != self.source]
        if self.source in external:
            raise ValueError(f"learning_curve.external names its own source {self.source!r}")
        numeric = [n for n in self.n if isinstance(n, int)]
        n_max = None if "all" in self.n else max(numeric)
        out = []
        for n in self.n:
            for replicate in range(self.replicates):
                size = None if n == "all" else int(n)
                sample = Subsample(
                    design="learning_curve", n=size, seed=self.seed, replicate=replicate, pool=[self.source],
                    steps=self.steps, n_max=n_max,
                )  # fmt: skip
                label = "all" if size is None else f"n{size}"
                out.append(Configuration(
                    name=f"lc-{self.source}-{label}-r{replicate}", train=[self.source], internal=[self.source],
                    external=list(external), subsample=sample,
                ))  # fmt: skip
        return out


class DesignConfig(StrictModel):
    """Configurations written in one line.

    ``leave_one_out: [a, b, c]`` gives ``loo-a`` (train b and c, internal = their test splits, external = a) and
    so on; ``single_sources: true`` adds ``only-a`` (train a, internal a, external = every other listed one).
    ``size_matched`` (:class:`SizeMatchedDesign`) and ``learning_curve`` (:class:`LearningCurveDesign`) separate
    the number of training images from the number of sources (issue 25).
    """

    leave_one_out: list[str] | None = Field(default=None, min_length=2)
    single_sources: bool = False
    size_matched: SizeMatchedDesign | None = None
    learning_curve: LearningCurveDesign | None = None

    def configurations(self, datasets: Sequence[str] = ()) -> list[Configuration]:
        """The design's configurations; ``datasets`` (the study's) are the default external sets of a learning
        curve."""
        out = []
        for held_out in self.leave_one_out or []:
            others = [d for d in self.leave_one_out or [] if d != held_out]
            out.append(Configuration(name=f"loo-{held_out}", train=others, internal=others, external=[held_out]))
        if self.single_sources:
            for alone in self.leave_one_out or []:
                others = [d for d in self.leave_one_out or [] if d != alone]
                out.append(Configuration(name=f"only-{alone}", train=[alone], internal=[alone], external=others))
        if self.size_matched is not None:
            out.extend(self.size_matched.configurations())
        if self.learning_curve is not None:
            out.extend(self.learning_curve.configurations(datasets))
        return out

    @field_validator("leave_one_out")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"leave_one_out names a dataset twice: {value}")
        return value

    @model_validator(mode="after")
    def _something(self) -> DesignConfig:
        if self.leave_one_out is None and self.size_matched is None and self.learning_curve is None:
            raise ValueError("design: give leave_one_out, size_matched or learning_curve")
        if self.single_sources and self.leave_one_out is None:
            raise ValueError("design.single_sources needs leave_one_out (the sources to train alone)")
        return self


class LauncherConfig(StrictModel):
    """Where ``cxrgen study --launcher submitit-local|slurm`` sends its jobs (submitit's SLURM parameters).

    ``extra`` passes further sbatch options verbatim (``{"constraint": "a100"}`` -> ``#SBATCH --constraint=a100``).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int = Field(default=1, ge=0)
    cpus_per_task: int = Field(default=8, gt=0)
    mem_gb: float = Field(default=64, gt=0)
    timeout_min: int = Field(default=24 * 60, gt=0)
    array_parallelism: int = Field(default=64, gt=0)
    cache_shards: int = Field(default=4, gt=0, description="tasks of the cache job array (prepare --shard k/n)")
    max_requeues: int = Field(default=10, ge=0, description="preemptions or timeouts a run survives")
    review: bool = Field(default=True, description="the final job's report includes the Grad-CAM error review")
    folder: Path | None = Field(default=None, description="job logs and scripts; default <out>/jobs")
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)


class ArchitectureSpec(StrictModel):
    """An ``architectures:`` entry written as a mapping: a timm backbone under a study name, and how it is used.

    ``mode: linear_probe`` freezes the backbone, embeds every image once (:mod:`cxrgen.learn.embed`) and fits one
    logistic regression per label on the embeddings (:mod:`cxrgen.learn.probes`). (A fine-tuned timm model is named
    by its plain string, as before.)
    Input size and normalization come from the backbone's own pretrained config (``preprocess.size`` still
    overrides the size). ``pretrained`` None follows ``train.pretrained``; without weights the features are those
    of a randomly initialized backbone and every table says "random weights".
    """

    name: str
    timm: str
    mode: Literal["linear_probe"] = "linear_probe"
    weights: Path | None = Field(default=None, description="local .safetensors or state_dict of the backbone")
    weights_sha256: str | None = None
    pretrained: bool | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _safe_name(value)


class ExternalModelSpec(StrictModel):
    """A model trained elsewhere, an ``architectures:`` entry with ``onnx:`` or ``torchscript:`` (issue 23).

    It is never trained: ``cxrgen study`` predicts every test set of the configurations that list it
    (:mod:`cxrgen.learn.external`). Its input is the study's preprocessing (CLAHE on or off) at ``input_size``,
    normalized with ImageNet's mean and std (``imagenet``) or one ``[mean, std]`` pair for the gray value in [0, 1],
    replicated to 3 channels [N, 3, S, S]. ``outputs`` gives the output column of each study label (default: the
    study's labels in order); a study label it does not name is NaN in the predictions, with a warning. ``output``
    says whether the model gives logits (cxrgen applies the sigmoid) or probabilities.
    """

    name: str
    onnx: Path | None = None
    torchscript: Path | None = None
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the model file")
    input_size: int = Field(gt=7)
    normalize: Literal["imagenet"] | tuple[float, float] = "imagenet"
    outputs: dict[str, int] | None = None
    output: Literal["logits", "probabilities"] = "logits"

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _safe_name(value)

    @model_validator(mode="after")
    def _one_file(self) -> ExternalModelSpec:
        if (self.onnx is None) == (self.torchscript is None):
            raise ValueError(f"architectures: {self.name!r} needs exactly one of onnx: or torchscript:")
        if self.outputs is not None and any(index < 0 for index in self.outputs.values()):
            raise ValueError(f"architectures: {self.name!r}: outputs indices must be >= 0, got {self.outputs}")
        if isinstance(self.normalize, tuple) and self.normalize[1] <= 0:
            raise ValueError(f"architectures: {self.name!r}: normalize std must be > 0, got {self.normalize}")
        return self

    @property
    def file(self) -> Path:
        path = self.onnx if self.onnx is not None else self.torchscript
        assert path is not None  # _one_file
        return path

    @property
    def kind(self) -> Literal["onnx", "torchscript"]:
        return "onnx" if self.onnx is not None else "torchscript"


class ProbeConfig(StrictModel):
    """Linear probes: per label a logistic regression whose inverse regularization C is chosen on validation AUC."""

    Cs: list[float] = Field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0], min_length=1)
    class_weight: Literal["balanced"] | None = None
    max_iter: int = Field(default=1000, gt=0)
    embed_batch_size: int = Field(default=64, gt=0)

    @field_validator("Cs")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(c <= 0 for c in value):
            raise ValueError(f"every C must be > 0, got {value}")
        return value


def _entry_kind(value: Any) -> str:
    """Which model an ``architectures:`` mapping entry is: one with ``onnx`` or ``torchscript`` comes from
    elsewhere, any other is a linear probe. Told by its keys, so an error names the entry's own keys
    (``architecture_specs.x.mode``) instead of listing both models' complaints."""
    if isinstance(value, dict):
        return "external" if {"onnx", "torchscript"} & value.keys() else "probe"
    return "external" if isinstance(value, ExternalModelSpec) else "probe"


#: An ``architectures:`` mapping entry, validated as the one model its keys say it is.
ArchitectureEntry = Annotated[
    Annotated[ArchitectureSpec, Tag("probe")] | Annotated[ExternalModelSpec, Tag("external")],
    Discriminator(_entry_kind),
]


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
    configurations: list[Configuration] = Field(default_factory=list)
    design: DesignConfig | None = None
    reference: Reference | None = None
    verify: VerifyConfig = VerifyConfig()
    launcher: LauncherConfig = LauncherConfig()
    architecture_specs: dict[str, ArchitectureEntry] = Field(default_factory=dict)
    probe: ProbeConfig = ProbeConfig()

    @model_validator(mode="before")
    @classmethod
    def _split_architecture_entries(cls, data: Any) -> Any:
        """Mapping entries of ``architectures`` go to ``architecture_specs``; ``architectures`` keeps plain names.

        So every caller that iterates ``config.architectures`` keeps seeing names (``runs/<c>/<name>/``).
        """
        if not isinstance(data, dict) or not isinstance(data.get("architectures"), list):
            return data
        names: list[Any] = []
        specs = dict(data.get("architecture_specs") or {})
        for entry in data["architectures"]:
            if isinstance(entry, dict):
                name = entry.get("name")
                if not isinstance(name, str):
                    raise ValueError(f"architectures: a mapping entry needs a 'name', got {entry}")
                if name in specs and specs[name] != entry:
                    raise ValueError(f"architectures: {name!r} is given twice with different settings")
                specs[name] = entry
                names.append(name)
            else:
                names.append(entry)
        return {**data, "architectures": names, "architecture_specs": specs}

    @model_validator(mode="after")
    def _expand_design(self) -> StudyConfig:
        """Append the design's configurations after the hand-written ones; a resolved file, reread, already holds
        them, so an identical configuration of the same name is kept once and a different one is an error."""
        if self.design is not None:
            have = {c.name: c for c in self.configurations}
            added = list(self.configurations)
            for conf in self.design.configurations(list(self.datasets)):
                if conf.name in have and have[conf.name] != conf:
                    raise ValueError(f"configuration {conf.name!r} is written by hand and by design, differently")
                if conf.name not in have:
                    added.append(conf)
            object.__setattr__(self, "configurations", added)  # frozen model: set once, during validation
        if not self.configurations:
            raise ValueError("configurations: none given (write configurations, a design, or both)")
        return self

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
        if len(set(self.architectures)) != len(self.architectures):
            raise ValueError(f"architecture names repeat: {self.architectures}")
        stray = set(self.architecture_specs) - set(self.architectures)
        if stray:
            raise ValueError(f"architecture_specs names {sorted(stray)}, which architectures does not list")
        return self

    @model_validator(mode="after")
    def _no_contradictions(self) -> StudyConfig:
        """Refuse studies whose numbers would come out wrong without an error (issue 14), naming the keys."""
        if not self.labels:
            raise ValueError("labels: empty list; name at least one label")
        for index, conf in enumerate(self.configurations):
            key = f"configurations[{index}] ({conf.name!r})"
            if not conf.train:
                raise ValueError(f"{key}.train: empty list; name the datasets it trains on")
            leaked = [ds for ds in conf.external if ds in conf.train]
            if leaked:
                raise ValueError(
                    f"{key}.external names {leaked}, which it also trains on; an external test set must be a "
                    "dataset the configuration never sees"
                )
            for role in ("train", "internal"):
                unlabelled = [ds for ds in getattr(conf, role) if not self.datasets[ds].labelled()]
                if unlabelled:
                    raise ValueError(
                        f"{key}.{role} names {unlabelled}, which has no labels (datasets.{unlabelled[0]}.labels is "
                        "not given); an unlabelled dataset can only be an external test set"
                    )
            untrained = [ds for ds in conf.internal if ds not in conf.train]
            if untrained:
                raise ValueError(
                    f"{key}.internal names {untrained}, which it does not train on ({conf.train}); "
                    "a dataset it never sees belongs in external"
                )
        roots = [(name, ds.root.resolve()) for name, ds in self.datasets.items()]
        for position, (name, root) in enumerate(roots):
            for other, other_root in roots[position + 1 :]:
                if root == other_root or root.is_relative_to(other_root) or other_root.is_relative_to(root):
                    raise ValueError(
                        f"datasets.{name}.root and datasets.{other}.root overlap ({root}, {other_root}): the same "
                        "images and patients under two names would put training images in a test set"
                    )
        out = self.out.resolve()
        for name, root in roots:
            if out == root or out.is_relative_to(root):
                raise ValueError(f"out: {out} is inside datasets.{name}.root ({root}); keep outputs apart from data")
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
        """The dataset's ``splits`` entry; without one, a dataset some configuration trains on is split 72/8/20
        by patient, and one that no configuration trains on is an external test set used whole (every image in
        ``test``)."""
        if dataset in self.splits:
            return self.splits[dataset]
        if dataset not in self.trained_datasets():
            return SplitConfig(fractions=dict(WHOLE_TEST))
        return SplitConfig()

    def trained_datasets(self) -> set[str]:
        """Datasets at least one configuration trains on."""
        return {name for conf in self.configurations for name in conf.train}

    def uncertainty_for(self, label: str) -> Policy:
        return self.uncertainty.get(label, "zeros")

    def used_datasets(self) -> list[str]:
        """Datasets used by any configuration, in first-use order."""
        names: dict[str, None] = {}
        for conf in self.configurations:
            for name in (*conf.train, *conf.internal, *conf.external):
                names[name] = None
        return list(names)

    def is_linear_probe(self, arch: str) -> bool:
        """Whether ``arch`` is a mapping entry of ``architectures`` with ``mode: linear_probe`` (embed and fit
        probes on a frozen backbone instead of training)."""
        entry = self.architecture_specs.get(arch)
        return isinstance(entry, ArchitectureSpec) and entry.mode == "linear_probe"

    def arch_spec(self, arch: str) -> ArchSpec:
        """The registry spec of one of the study's architectures: a mapping entry of ``architectures``
        (``architecture_specs``) names its timm backbone, whose pretrained config gives the input size."""
        from cxrgen.models.registry import ArchSpec, get_arch  # static facts; timm only for names outside it

        entry = self.architecture_specs.get(arch)
        if entry is None:
            return get_arch(arch)
        if isinstance(entry, ExternalModelSpec):
            return ArchSpec(name=entry.name, timm_name="", input_size=entry.input_size)
        backbone = get_arch(entry.timm)
        return ArchSpec(name=entry.name, timm_name=backbone.timm_name, input_size=backbone.input_size)

    def input_size(self, arch: str) -> int:
        """The side the study feeds ``arch``: a model from elsewhere its own ``input_size``; else ``preprocess.size``
        when set, else the architecture's own."""
        external = self.external_model(arch)
        if external is not None:
            return external.input_size
        return self.preprocess.size or self.arch_spec(arch).input_size

    def external_model(self, arch: str) -> ExternalModelSpec | None:
        """The ``onnx:`` / ``torchscript:`` entry of ``arch``, or None for a model the study trains."""
        entry = self.architecture_specs.get(arch)
        return entry if isinstance(entry, ExternalModelSpec) else None


#: Deeper nesting than any study file needs; PyYAML's composer recurses and would end in a RecursionError.
MAX_YAML_DEPTH = 64


def _check_duplicate_keys(root: yaml.Node, path: Path) -> None:
    """Raise on a mapping that repeats a key anywhere in the document (PyYAML keeps the last silently).

    The walk is iterative and visits each node once: an alias is the same node object as its anchor, so a
    "billion laughs" document (9 levels of 9 aliases, 9**9 leaves as a tree) costs about 90 visits, not a day.
    Nesting beyond :data:`MAX_YAML_DEPTH` is refused here, with its line.
    """
    visited: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(
                f"{path}: nested more than {MAX_YAML_DEPTH} levels deep at line {node.start_mark.line + 1}"
            )
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, _ in node.value:
                key = str(key_node.value)
                if key in seen:
                    raise ConfigError(
                        f"{path}: duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                        f"(first at line {seen[key]})"
                    )
                seen[key] = key_node.start_mark.line + 1
            # Reversed, so the first duplicate in document order is the one reported.
            stack.extend((value, depth + 1) for _, value in reversed(node.value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in reversed(node.value))


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
    except RecursionError:
        # PyYAML's composer recurses once per nesting level, before the depth check can see the document.
        raise ConfigError(f"{path}: nested too deeply to parse (more than {MAX_YAML_DEPTH} levels)") from None
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
    if isinstance(data.get("architectures"), list):
        data["architectures"] = [
            {**entry, **{key: resolve(entry[key]) for key in ("weights", "onnx", "torchscript") if entry.get(key)}}
            if isinstance(entry, dict)
            else entry
            for entry in data["architectures"]
        ]
    train = data.get("train")
    if isinstance(train, dict) and isinstance(train.get("weights"), dict):
        data["train"] = {**train, "weights": {k: resolve(v) for k, v in train["weights"].items()}}
    launcher = data.get("launcher")
    if isinstance(launcher, dict) and "folder" in launcher:
        data["launcher"] = {**launcher, "folder": resolve(launcher["folder"])}
    return data


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file; relative paths become absolute against its folder."""
    path = Path(path)
    data = _resolve_paths(read_yaml(path), path.resolve().parent)
    _check_reader_options(data, path)
    try:
        config = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_errors(exc)}") from exc
    if (config.out / RESOLVED_CONFIG).resolve() == path.resolve():
        raise ConfigError(
            f"{path}: out: {config.out} would overwrite this study file with the resolved {RESOLVED_CONFIG}; "
            "choose another out folder or rename the study file"
        )
    return config


def check_dataset_roots(config: StudyConfig, path: Path | str = "study file") -> None:
    """Fail with the key and file when a dataset root does not exist."""
    for name, ds in config.datasets.items():
        if not ds.root.is_dir():
            raise ConfigError(f"{path}: datasets.{name}.root: folder {ds.root} does not exist")


def dump_resolved(config: StudyConfig) -> str:
    """The resolved config as YAML (absolute paths, every default filled in)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
