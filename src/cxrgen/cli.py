"""The ``cxrgen`` command: one sub-command per stage. Nothing imports this module."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pandas as pd
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from cxrgen.errors import CxrgenError

app = typer.Typer(
    help="Cross-dataset generalization studies of chest X-ray classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def command(name: str | None = None) -> Callable[[F], F]:
    """Register a sub-command whose expected failures end as one line on stderr and exit code 1.

    Set ``CXRGEN_DEBUG=1`` to see the traceback instead.
    """

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except (CxrgenError, OSError, ValueError) as exc:
                if os.environ.get("CXRGEN_DEBUG"):
                    raise
                message = " ".join(str(exc).split()) or type(exc).__name__
                err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None

        app.command(name)(run)
        return func

    return wrap


@app.callback()
def setup_logging(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )
    logging.captureWarnings(True)


def quiet_lightning() -> None:
    """Keep Lightning's warnings but not its banner (accelerators, tips), which it logs at INFO."""
    import lightning.pytorch  # noqa: F401  (imported first: its import sets its logger to INFO)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def print_frame(frame: pd.DataFrame, title: str) -> None:
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
    until: Annotated[str, typer.Option(help="Last stage to run: manifest, splits, verify or cache.")] = "cache",
    workers: Annotated[int | None, typer.Option(help="Processes for verify and cache (default: all cores).")] = None,
    shard: Annotated[str | None, typer.Option(help="Do only part k of n of the cache work, e.g. 2/4.")] = None,
) -> None:
    """Metadata -> manifest, splits, image check and the preprocessed cache."""
    from cxrgen.config import check_dataset_roots, load_study
    from cxrgen.prepare import STAGES, run_prepare

    if until not in STAGES:
        raise typer.BadParameter(f"--until must be one of {', '.join(STAGES)}, got {until!r}")
    config = load_study(study)
    check_dataset_roots(config, study)
    with progress_bars() as progress:
        prepared = run_prepare(config, until=until, workers=workers, shard=parse_shard(shard), progress=progress)
    if prepared.cohort is not None:
        print_frame(prepared.cohort, f"{config.name}: images, patients, sex, age and positives per split")
    if prepared.excluded_tests is not None:
        title = "test sets: images that failed to decode, left out of evaluation and counted in results/auc.csv"
        print_frame(prepared.excluded_tests, title)
    console.print(f"wrote {config.out}")


@command("evaluate")
def evaluate(
    predictions: Annotated[list[Path], typer.Argument(help="Predictions files: image_id, patient_id, y_/p_<label>.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for auc.csv (and comparisons.csv with 2+ files).")],
    n_boot: Annotated[int, typer.Option(help="Patient-clustered bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    ci: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
) -> None:
    """Per-label AUC with bootstrap and DeLong intervals; DeLong tests between files."""
    from cxrgen.evaluate import evaluate_files

    auc, comparisons = evaluate_files(predictions, out, n_boot=n_boot, seed=seed, ci=ci)
    print_frame(auc[["source", "label", "auc", "ci_low", "ci_high", "n_pos", "n_neg"]].round(4), "AUC")
    if comparisons is not None:
        shown = comparisons[["a", "b", "label", "test", "auc_a", "auc_b", "p", "p_holm"]]
        print_frame(shown.round({"auc_a": 4, "auc_b": 4}), "comparisons")  # p unrounded: 1e-30 is not 0
    console.print(f"wrote {out}")


@command("synthesize")
def synthesize(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the three synthetic hospitals and study.yaml.")],
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    scale: Annotated[float, typer.Option(help="Multiplies patient counts (1.0: about 3,400 images).")] = 1.0,
    image_size: Annotated[int, typer.Option(help="Image height in pixels.")] = 256,
    workers: Annotated[int | None, typer.Option(help="Rendering processes (default: cores, at most 8).")] = None,
    shortcut: Annotated[
        bool, typer.Option(help="--no-shortcut: control world without the NIH-like pacemaker-Cardiomegaly pairing.")
    ] = True,
) -> None:
    """Write CheXpert-, NIH- and MIMIC-like synthetic datasets in their native layouts, and a study file."""
    from cxrgen.synthetic import write_synthetic

    workers = workers or min(8, os.cpu_count() or 1)
    write_synthetic(out_dir, seed=seed, scale=scale, image_size=image_size, workers=workers, shortcut=shortcut)
    console.print(f"wrote {out_dir} (study file {out_dir / 'study.yaml'})")


@command("report")
def report(
    study_dir: Annotated[Path, typer.Argument(help="The study directory (config.yaml, manifest.parquet, runs/).")],
    review: Annotated[bool, typer.Option(help="Error review with Grad-CAM (loads checkpoints and images).")] = True,
) -> None:
    """Table 1, comparisons, ROC and dataset figures, error review -> STUDY_DIR/results/report.html."""
    from cxrgen.report import build_report

    with console.status("report") as status:
        results = build_report(study_dir, review=review, progress=lambda step: status.update(f"report: {step}"))
    console.print(f"wrote {results / 'report.html'}")


@command("models")
def models(
    labels: Annotated[int, typer.Option(help="Outputs of the classifier (the paper: 5).")] = 5,
) -> None:
    """Registered architectures: input size and trainable parameters (Keras-faithful) beside the paper's."""
    from cxrgen.models import models_table

    print_frame(pd.DataFrame(models_table(num_labels=labels)), "architectures")


@command("train")
def train(
    study: Annotated[Path, typer.Argument(help="The study YAML file.")],
    configuration: Annotated[str, typer.Option(help="Configuration name.")],
    arch: Annotated[str, typer.Option(help="Architecture (see cxrgen models) or any timm model name.")],
) -> None:
    """Train one run; a rerun resumes from last.ckpt, a finished run returns at once."""
    from cxrgen.config import load_study
    from cxrgen.training import train_run

    quiet_lightning()
    config = load_study(study)
    console.print(f"wrote {train_run(config, config.out, configuration, arch, progress=True)}")


@command("predict")
def predict(
    study: Annotated[Path, typer.Argument(help="The study YAML file.")],
    configuration: Annotated[str, typer.Option(help="Configuration name.")],
    arch: Annotated[str, typer.Option(help="Architecture of the trained run.")],
    test_set: Annotated[str | None, typer.Option(help="internal or an external dataset (default: all).")] = None,
) -> None:
    """Predictions of a run's best.ckpt on its test sets -> runs/<configuration>/<arch>/predictions/."""
    from cxrgen.config import load_study
    from cxrgen.predict import predict_run

    config = load_study(study)
    conf = config.configuration(configuration)
    for name in [test_set] if test_set else [t.name for t in conf.test_sets()]:
        console.print(f"wrote {predict_run(config, config.out, configuration, arch, name)}")


@command("study")
def study(
    study: Annotated[Path, typer.Argument(help="The study YAML file.")],
    only: Annotated[str | None, typer.Option(help="Run only CONFIGURATION/ARCH, e.g. nih/densenet121.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes for verify and cache (default: all cores).")] = None,
) -> None:
    """Prepare, then train, predict and evaluate every configuration x architecture; resumable."""
    from cxrgen.config import check_dataset_roots, load_study
    from cxrgen.study import run_study, summary

    quiet_lightning()
    config = load_study(study)
    check_dataset_roots(config, study)
    table = run_study(config, only=only, workers=workers, progress=lambda step: console.rule(step, style="dim"))
    print_frame(summary(table), f"{config.name}: mean AUC over {len(config.labels)} labels")
    console.print(f"wrote {config.out}; next: cxrgen report {config.out}")


def main() -> None:
    app()
