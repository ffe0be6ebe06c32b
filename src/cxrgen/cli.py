"""The ``cxrgen`` command: one sub-command per stage. Nothing imports this module."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pandas as pd
import typer
from rich.console import Console
from rich.logging import RichHandler
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


def print_frame(frame: pd.DataFrame, title: str) -> None:
    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(str(column), justify="right" if pd.api.types.is_numeric_dtype(frame[column]) else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*("" if pd.isna(v) else f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    console.print(table)


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
    from cxrgen.config import load_study
    from cxrgen.prepare import STAGES, run_prepare

    if until not in STAGES:
        raise typer.BadParameter(f"--until must be one of {', '.join(STAGES)}, got {until!r}")
    config = load_study(study)
    prepared = run_prepare(config, until=until, workers=workers, shard=parse_shard(shard))  # type: ignore[arg-type]
    if prepared.cohort is not None:
        print_frame(prepared.cohort, f"{config.name}: images, patients, sex, age and positives per split")
    console.print(f"wrote {config.out}")


def main() -> None:
    app()
