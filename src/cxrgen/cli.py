"""The ``cxrgen`` command: one sub-command per stage. Nothing imports this module."""

# Each command imports its machinery (pandas, the study file's models, the runners) in its body: --help answers at once.
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from cxrgen.errors import CxrgenError
from cxrgen.runner.stages import Stage
from cxrgen.utils.interrupts import Interrupted, as_interrupted, raise_on_signals
from cxrgen.utils.notes import ConsoleFilter, Tally

if TYPE_CHECKING:
    import pandas as pd

    from cxrgen.study.workspace import Study

#: ``cxrgen --help`` lists the commands in the order a user meets them; commands not named here come last.
STAGE_ORDER = (
    "synthesize", "prepare", "plan", "study", "train", "predict", "evaluate", "predictions", "report", "export",
    "status", "models",
)


class StageOrderGroup(typer.core.TyperGroup):
    """Typer lists commands in the order they are registered; a study is met stage by stage instead."""

    def list_commands(self, ctx: Any) -> list[str]:  # typer vendors its own click Context type
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(STAGE_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))


app = typer.Typer(
    cls=StageOrderGroup,
    help="Cross-dataset generalization studies of chest X-ray classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)
#: Every warning a command raises, by kind, for the summary after it.
TALLY = Tally()
F = TypeVar("F", bound=Callable[..., Any])


predictions_app = typer.Typer(
    help="Predictions files from elsewhere: convert a published model's table.", no_args_is_help=True
)
app.add_typer(predictions_app, name="predictions")


def command(name: str | None = None, group: typer.Typer | None = None) -> Callable[[F], F]:
    """Register a sub-command whose expected failures end as one line on stderr and exit code 1.

    SIGTERM and Ctrl-C end it with one ``error: stopped by ...`` line and 128 + the signal number (143, 130); see
    :mod:`cxrgen.utils.interrupts`. Set ``CXRGEN_DEBUG=1`` to see the traceback instead.
    """

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            raise_on_signals()
            try:
                result = func(*args, **kwargs)
                print_warning_summary()
                return result
            except (Interrupted, KeyboardInterrupt) as exc:
                stopped = as_interrupted(exc)
                assert stopped is not None
                if os.environ.get("CXRGEN_DEBUG"):
                    raise
                err_console.print(f"error: {stopped}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(stopped.exit_code) from None
            except (CxrgenError, OSError, ValueError) as exc:
                if os.environ.get("CXRGEN_DEBUG"):
                    raise
                message = " ".join(str(exc).split()) or type(exc).__name__
                err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None

        (group or app).command(name)(run)  # group: a sub-app such as `cxrgen export`
        return func

    return wrap


@app.callback()
def setup_logging(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    # On a terminal, rich's aligned records; in a log file (SLURM, CI, a pipe) one plain line per record, never
    # wrapped, so a path or a count in a message can be found with grep.
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(console=err_console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    if not verbose:  # one line per kind of warning, without source file and line (issue 26)
        handler.addFilter(ConsoleFilter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger().addHandler(TALLY)
    logging.captureWarnings(True)


def print_warning_summary() -> None:
    """After a command: every kind of warning it raised, one line each with its count (stderr)."""
    if not TALLY.kinds:
        return
    err_console.print(f"{TALLY.total} warning(s) of {len(TALLY.kinds)} kind(s); --verbose shows each with its source:",
                      markup=False, highlight=False)
    for line in TALLY.lines():
        err_console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def quiet_lightning() -> None:
    """Keep Lightning's warnings but not its banner (accelerators, tips), which it logs at INFO."""
    import lightning.pytorch  # noqa: F401  (imported first: its import sets its logger to INFO)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning 2.6's pytree helper still builds torch's deprecated LeafSpec at every fit
    # (Lightning-AI/pytorch-lightning#21326); the warning concerns no cxrgen code, so only it is hidden.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # On a machine with SLURM installed, Lightning suggests `srun` at every local fit; cxrgen sends cluster work
    # through its own launcher (`cxrgen study --launcher slurm`), so the hint would only mislead.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


def print_frame(frame: pd.DataFrame, title: str) -> None:
    import pandas as pd

    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(str(column), justify="right" if pd.api.types.is_numeric_dtype(frame[column]) else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*("" if pd.isna(v) else f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    console.print(table)


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """Rich progress bars, one per task name, updated through ``(task, done, total)`` calls."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bars.add_task(name, total=total)
            bars.update(tasks[name], completed=done, total=total)

        yield update


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        k, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--shard must look like k/n, got {value!r}") from None
    if not 1 <= k <= n:
        raise typer.BadParameter(f"--shard k/n needs 1 <= k <= n, got {value!r}")
    return k, n


@command("prepare")
def prepare(
    study: Annotated[Path, typer.Argument(help="The study YAML file.")],
    until: Annotated[Stage, typer.Option(help="Last stage to run.")] = "cache",
    workers: Annotated[int | None, typer.Option(help="Processes for verify and cache (default: all cores).")] = None,
    shard: Annotated[str | None, typer.Option(help="Do only part k of n of the cache work, e.g. 2/4.")] = None,
) -> None:
    """Metadata -> manifest, splits, image check and the preprocessed cache."""
    from cxrgen.runner.prepare import run_prepare
    from cxrgen.study.config import check_dataset_roots
    from cxrgen.study.workspace import Study
    from cxrgen.utils.lock import study_lock

    opened = Study.load(study)
    config = opened.config
    check_dataset_roots(config, study)
    # Shards of one build run at once by design (the cache assembles itself under its own lock); a whole
    # prepare holds the study lock, as `cxrgen study` does.
    held = study_lock(opened.dir.path) if shard is None else contextlib.nullcontext()
    with held, progress_bars() as progress:
        prepared = run_prepare(opened, until=until, workers=workers, shard=parse_shard(shard), progress=progress)
    if prepared.cohort is not None:
        print_frame(prepared.cohort, f"{config.name}: images, patients, sex, age and positives per split")
    if prepared.excluded_tests is not None:
        title = "test sets: images that failed to decode, left out of evaluation and counted in results/auc.csv"
        print_frame(prepared.excluded_tests, title)
    console.print(f"wrote {opened.dir.path}")


@command("evaluate")
def evaluate(
    predictions: Annotated[
        list[Path],
        typer.Argument(help="Predictions files (parquet, CSV, TSV, .gz): image_id, patient_id, y_/p_<label>."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for auc.csv (and comparisons.csv with 2+ files).")],
    n_boot: Annotated[int, typer.Option(help="Patient-clustered bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    ci: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
) -> None:
    """Per-label AUC with bootstrap and DeLong intervals; DeLong tests between files."""
    from cxrgen.metrics.evaluate import evaluate_files
    from cxrgen.sources.labels import canonical_label

    auc, comparisons = evaluate_files(predictions, out, n_boot=n_boot, seed=seed, ci=ci, label_name=canonical_label)
    print_frame(auc[["source", "label", "auc", "ci_low", "ci_high", "n_pos", "n_neg"]].round(4), "AUC")
    if comparisons is not None:
        shown = comparisons[["a", "b", "label", "test", "auc_a", "auc_b", "p", "p_holm"]]
        print_frame(shown.round({"auc_a": 4, "auc_b": 4}), "comparisons")  # p unrounded: 1e-30 is not 0
    console.print(f"wrote {out}")


@command("convert", group=predictions_app)
def predictions_convert(
    source: Annotated[Path, typer.Argument(help="The model's table: CSV, TSV (optionally .gz) or parquet.")],
    image_id: Annotated[str, typer.Option("--image-id", help="Its image id column, e.g. 'Image Index'.")],
    out: Annotated[Path, typer.Option("--out", help="The predictions file to write (.parquet).")],
    patient_id: Annotated[str | None, typer.Option("--patient-id", help="Its patient id column.")] = None,
    label_map: Annotated[
        list[str] | None,
        typer.Option("--label-map", help="COLUMN=Label, repeatable (default: every --prob-prefix column)."),
    ] = None,
    prob_prefix: Annotated[str, typer.Option(help="Probability columns are PREFIX<Label>.")] = "prob_",
    patients: Annotated[
        Path | None, typer.Option(help="A metadata table giving each image's patient (joined on the image id).")
    ] = None,
    patients_image_id: Annotated[
        str | None, typer.Option(help="The metadata table's image id column (default: --image-id).")
    ] = None,
    patients_id: Annotated[str | None, typer.Option(help="The metadata table's patient id column.")] = None,
    findings: Annotated[
        str | None, typer.Option(help="Ground truth: a column listing the positive findings (input or --patients).")
    ] = None,
    findings_sep: Annotated[str, typer.Option(help="Separator of the findings list.")] = "|",
    truth_prefix: Annotated[
        str | None, typer.Option(help="Ground truth: 0/1 columns PREFIX<Label> of the input.")
    ] = None,
) -> None:
    """A published model's outputs -> a predictions file (image_id, patient_id, y_/p_<label>) for evaluate."""
    from cxrgen.runner.convert import Conversion, convert_predictions, parse_label_map

    conversion = Conversion(
        image_id=image_id, patient_id=patient_id, label_map=parse_label_map(label_map or []), prob_prefix=prob_prefix,
        patients=patients, patients_image_id=patients_image_id, patients_id=patients_id, findings=findings,
        findings_sep=findings_sep, truth_prefix=truth_prefix,
    )
    frame, labels = convert_predictions(source, out, conversion)
    labelled = sum(int(frame[f"y_{label}"].notna().any()) for label in labels)
    console.print(f"wrote {out}: {len(frame):,} images, {frame['patient_id'].nunique():,} patients, "
                  f"{len(labels)} labels ({labelled} with ground truth): {', '.join(labels)}")  # fmt: skip


@command("synthesize")
def synthesize(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the three synthetic hospitals and study.yaml.")],
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    scale: Annotated[float, typer.Option(help="Multiplies patient counts (1.0: about 3,400 images).")] = 1.0,
    image_size: Annotated[int, typer.Option(help="Image height in pixels.")] = 256,
    workers: Annotated[int | None, typer.Option(help="Rendering processes (default: cores, at most 8).")] = None,
    hospitals: Annotated[
        str, typer.Option(help="Comma-separated, among chexpert,nih,mimic,padchest,vindr,brax.")
    ] = "chexpert,nih,mimic",
    shortcut: Annotated[
        bool, typer.Option(help="--no-shortcut: control world without the NIH-like pacemaker-Cardiomegaly pairing.")
    ] = True,
    world: Annotated[
        str, typer.Option(help="shipped, control (= --no-shortcut), prevalence, acquisition or reversed (docs).")
    ] = "shipped",
) -> None:
    """Write synthetic hospitals (default CheXpert-, NIH- and MIMIC-like) in their native layouts, and a study file."""
    from cxrgen.synthetic import write_synthetic

    workers = workers or min(8, os.cpu_count() or 1)
    chosen = tuple(name.strip() for name in hospitals.split(",") if name.strip())
    write_synthetic(
        out_dir, seed=seed, scale=scale, image_size=image_size, workers=workers, hospitals=chosen, shortcut=shortcut,
        world=world,
    )
    console.print(f"wrote {out_dir} (study file {out_dir / 'study.yaml'})")


class _SectionBars:
    """One rich progress bar per report section (its pieces: files, runs, pairs, figures)."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.tasks: dict[str, TaskID] = {}

    def start(self, section: str, total: int) -> None:
        if section in self.tasks:
            self.bars.update(self.tasks[section], total=(self.bars.tasks[self.tasks[section]].total or 0) + total)
        else:
            self.tasks[section] = self.bars.add_task(section, total=total)

    def advance(self, section: str) -> None:
        self.bars.advance(self.tasks[section])


@command("report")
def report(
    study_dir: Annotated[Path, typer.Argument(help="The study directory (config.yaml, manifest.parquet, runs/).")],
    review: Annotated[bool, typer.Option(help="Error review with Grad-CAM (loads checkpoints and images).")] = True,
    only: Annotated[
        str | None,
        typer.Option(help="Comma-separated sections to write (default: all): auc, seeds, calibration, table1, "
                     "comparisons, next_hospital, size_vs_sources, findings, overview, cohort, missing, figures, "
                     "review, shift, estimates, tripod, html."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Processes computing the sections (default: all cores); same files for any.")
    ] = None,
    cache: Annotated[bool, typer.Option(help="Reuse results/.cache/ where a piece's inputs are unchanged.")] = True,
) -> None:
    """Table 1, comparisons, ROC and dataset figures, error review -> STUDY_DIR/results/report.html.

    Each piece (one predictions file's AUCs, one comparison, one figure...) is cached under results/.cache/ by the
    fingerprint of its inputs, so a rerun recomputes only what changed.
    """
    from threadpoolctl import threadpool_limits

    from cxrgen.report import build_report
    from cxrgen.report.build import parse_sections

    sections = parse_sections(only)
    # The report's products are small ([64, P] x [P, G]); BLAS and OpenMP pools on a loaded node make them many
    # times slower than one thread (issue 30), so every native pool keeps to one thread while it runs.
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=not console.is_terminal) as bars, \
            threadpool_limits(limits=1):
        step = bars.add_task("report", total=None)
        results = build_report(
            study_dir, review=review, only=sections, workers=workers or os.cpu_count() or 1, cache=cache,
            progress=lambda text: bars.update(step, description=f"report: {text}"),
            sections_progress=_SectionBars(bars),
        )
    console.print(f"wrote {results / ('report.html' if sections is None or 'html' in sections else '')}")


@command("models")
def models(
    labels: Annotated[int, typer.Option(help="Outputs of the classifier (the paper: 5).")] = 5,
) -> None:
    """The paper's architectures (input size, trainable parameters beside the paper's); any timm model works too."""
    import pandas as pd

    from cxrgen.models.registry import models_table

    print_frame(pd.DataFrame(models_table(num_labels=labels)), "architectures")
    typer.echo(
        "Any timm model name can be used under `architectures:` in the study file too (e.g. resnet50, "
        "convnext_tiny, vit_small_patch16_224); its input size comes from timm's pretrained config unless "
        "preprocess.size is set. Models trained elsewhere enter as ONNX or TorchScript entries, or as predictions "
        "files (`cxrgen evaluate`)."
    )


def check_seed(study: Study, seed: int | None) -> None:
    """``--seed`` must be one of the study's ``train.seeds``: a usage error (exit status 2), before any work."""
    from cxrgen.study.config import ConfigError

    try:
        study.seed(seed)
    except ConfigError:
        raise typer.BadParameter(f"--seed {seed} is not one of train.seeds {study.seeds}") from None


@command("train")
def train(
    study: Annotated[Path, typer.Argument(help="The study YAML file.")],
    configuration: Annotated[str, typer.Option(help="Configuration name.")],
    arch: Annotated[str, typer.Option(help="Architecture (see cxrgen models) or any timm model name.")],
    seed: Annotated[int | None, typer.Option(help="One of train.seeds (default: the first).")] = None,
) -> None:
    """Train one run; a rerun resumes from last.ckpt, a finished run returns at once."""
    from cxrgen.learn.train import train_run
    from cxrgen.study.workspace import Study

    quiet_lightning()
    opened = Study.load(study)
    check_seed(opened, seed)
    console.print(f"wrote {train_run(opened, configuration, arch, progress=True, seed=seed)}")


@command("predict")
def predict(
    study: Annotated[Path, typer.Argument(help="The study YAML file.")],
    configuration: Annotated[str, typer.Option(help="Configuration name.")],
    arch: Annotated[str, typer.Option(help="Architecture of the trained run.")],
    test_set: Annotated[str | None, typer.Option(help="internal or an external dataset (default: all).")] = None,
    allow_unfinished: Annotated[
        bool, typer.Option(help="Predict from a run without done.json too; its predictions are marked unfinished.")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="One of train.seeds (default: the first).")] = None,
) -> None:
    """Predictions of a run's best.ckpt on its test sets -> runs/<configuration>/<arch>/predictions/."""
    from cxrgen.study.workspace import Study

    opened = Study.load(study)
    conf = opened.config.configuration(configuration)
    check_seed(opened, seed)
    run = opened.run(configuration, arch, seed)
    if run.best_checkpoint.is_file() and not allow_unfinished:
        run.require_finished(f"{configuration}/{arch}")  # before the seconds of importing torch and Lightning
    from cxrgen.learn.predict import predict_run
    for name in [test_set] if test_set else [t.name for t in conf.test_sets()]:
        written = predict_run(opened, configuration, arch, name, allow_unfinished=allow_unfinished, seed=seed)
        console.print(f"wrote {written}")


@command("study")
def study(
    study: Annotated[Path, typer.Argument(help="The study YAML file.")],
    only: Annotated[
        str | None, typer.Option(help="Run only CONFIGURATION/ARCH (all seeds) or CONFIGURATION/ARCH/SEED.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Processes for verify and cache (default: all cores).")] = None,
    launcher: Annotated[
        str, typer.Option(help="local (this process), submitit-local (subprocess jobs) or slurm (a job per run).")
    ] = "local",
) -> None:
    """Prepare, then train, predict and evaluate every configuration x architecture; resumable."""
    from cxrgen.runner.study import run_study, summary
    from cxrgen.study.config import check_dataset_roots
    from cxrgen.study.workspace import Study

    quiet_lightning()
    opened = Study.load(study)
    config, out = opened.config, opened.dir.path
    check_dataset_roots(config, study)
    if launcher != "local":
        submit_study(opened, launcher, only)
        return
    table = run_study(opened, only=only, workers=workers, progress=lambda step: console.rule(step, style="dim"))
    print_frame(summary(table), f"{config.name}: mean AUC over the labels with both classes in the test set")
    console.print(f"wrote {out}; next: cxrgen report {out}")


@command("plan")
def plan(
    study: Annotated[Path, typer.Argument(help="The study YAML file.")],
) -> None:
    """Every run with its training and test sets and image / patient counts, before any training."""
    import pandas as pd

    from cxrgen.runner.plan import plan_table, split_notes
    from cxrgen.runner.prepare import run_prepare
    from cxrgen.study.config import check_dataset_roots
    from cxrgen.study.workspace import Study

    opened = Study.load(study)
    config = opened.config
    check_dataset_roots(config, study)
    prepared = run_prepare(opened, until="splits")
    if prepared.splits is None:  # run_prepare(until="splits") always makes them
        raise CxrgenError("plan: prepare made no splits")
    excluded = opened.dir.excluded
    skipped = pd.read_csv(excluded, dtype=str, keep_default_na=False)["image_id"] if excluded.is_file() else []
    table = plan_table(config, prepared.manifest, prepared.splits, excluded=set(skipped))
    print_frame(table, f"{config.name}: {len(table)} run(s); external sets are a dataset's test split, or the "
                       "whole dataset where a line below says so")
    for line in split_notes(config):
        console.print(line, markup=False, highlight=False)


def submit_study(study: Study, launcher: str, only: str | None) -> None:
    """``cxrgen study --launcher submitit-local|slurm``: every run a job; see ``cxrgen.runner.launch``."""
    from cxrgen.runner.launch import LAUNCHERS, launch_study

    if launcher not in LAUNCHERS:
        raise typer.BadParameter(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    submission = launch_study(study, launcher, only=only, say=lambda line: console.print(line, markup=False))  # type: ignore[arg-type]
    out = study.dir.path
    if launcher == "slurm":
        console.print(f"submitted {len(submission.runs)} run job(s); follow them with: cxrgen status {out}")
    else:
        console.print(f"wrote {out}; next: cxrgen status {out}")


def status_table(study_dir: Path) -> Table:
    import pandas as pd

    from cxrgen.runner.status import counts, study_status

    frame = study_status(study_dir)
    summary = ", ".join(f"{n} {state}" for state, n in counts(frame).items() if n)
    table = Table(title=f"{study_dir}: {summary}")
    for column in frame.columns:
        table.add_column(column, justify="right" if pd.api.types.is_numeric_dtype(frame[column]) else "left")
    styles = {"done": "green", "running": "cyan", "queued": "yellow", "failed": "bold red", "not started": "dim",
              "unreadable": "bold magenta"}  # fmt: skip
    for row in frame.itertuples(index=False):
        cells = ["" if pd.isna(v) else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        table.add_row(*cells, style=styles[row.state])
    return table


@command("status")
def status(
    study_dir: Annotated[Path, typer.Argument(help="The study directory (the study file's out).")],
    watch: Annotated[bool, typer.Option(help="Refresh the table until interrupted.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 10.0,
) -> None:
    """Every planned run: state, job id, epoch, best validation AUC, seconds per epoch, ETA, log (files only)."""
    import time

    from rich.live import Live

    if not watch:
        console.print(status_table(study_dir))
        return
    live = Live(status_table(study_dir), console=console, auto_refresh=False)
    with live, contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(interval)
            live.update(status_table(study_dir), refresh=True)


@command("embed")
def embed(
    study: Annotated[Path, typer.Argument(help="The study YAML file (prepared: caches built).")],
    arch: Annotated[str | None, typer.Option(help="Only this linear-probe architecture.")] = None,
    shard: Annotated[str | None, typer.Option(help="Do only part k of n of the chunks, e.g. 2/4.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: the GPU if any).")] = None,
) -> None:
    """Embed every image once per frozen backbone (linear-probe architectures); resumable and shardable."""
    from cxrgen.learn.embed import embed_study
    from cxrgen.study.workspace import Study

    with progress_bars() as progress:
        folders = embed_study(Study.load(study), arch=arch, device=device, shard=parse_shard(shard), progress=progress)
    for folder in folders:
        console.print(f"wrote {folder}")


export_app = typer.Typer(help="Copy a study's finished runs into tracking tools researchers already use.",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")


@command("mlflow", group=export_app)
def export_mlflow(
    study_dir: Annotated[Path, typer.Argument(help="The study directory (runs/ and, after `report`, results/).")],
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking store, e.g. sqlite:///path/mlflow.db (default: STUDY_DIR/mlflow.db).")] = None,
    experiment: Annotated[str | None, typer.Option(help="Experiment name (default: the study's name).")] = None,
) -> None:
    """Every finished run (parameters, per-epoch metrics, final AUCs, the report) into MLflow; reruns update."""
    from cxrgen.runner.export import export_mlflow as export

    summary = export(study_dir, tracking_uri=tracking_uri, experiment=experiment)
    console.print(f"MLflow {summary.tracking_uri}: experiment {summary.experiment_id}, {summary.created} run(s) "
                  f"created, {summary.updated} updated")


def main() -> None:
    app()
