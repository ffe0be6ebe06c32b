"""The report's units of work: fingerprinted, cached under ``results/.cache/`` and run over processes.

A *unit* is one piece of one section that depends on a few inputs only: the AUCs of one predictions file, one
paired comparison, the shift analyses of one file, one figure. Its *fingerprint* hashes what it reads (each
predictions file's relative path, size and ``mtime_ns``, the study files, the config settings it uses) and the
code version (a hash of cxrgen's sources), so a rerun after adding one run recomputes only the units whose inputs
that run touches; the others are read back from ``results/.cache/<section>/<fingerprint>.pkl`` (written
atomically). The cache holds pickles the report wrote itself; delete the folder to start afresh.

Units run in the calling process (``workers=1``) or in a pool of forked processes (``workers>1``; each worker's
native thread pools limited to one thread). Either way a unit's warnings are captured with its result and
replayed in unit order, and the results are returned in unit order, so the files written do not depend on the
number of workers or on what came from the cache.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from cxrgen.utils.fileio import write_bytes

log = logging.getLogger(__name__)

CACHE_DIR = ".cache"


class SectionProgress(Protocol):
    """Told how many units each section has and when each is done (e.g. one rich progress bar per section)."""

    def start(self, section: str, total: int) -> None: ...

    def advance(self, section: str) -> None: ...


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of every ``.py`` file of the installed cxrgen package: a code change invalidates the cache."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_stamp(path: Path, base: Path | None = None) -> list[object]:
    """``[relative path, size, mtime_ns]`` of a file, or ``[path, None, None]`` when it does not exist."""
    name = path.relative_to(base).as_posix() if base is not None and path.is_relative_to(base) else str(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return [name, None, None]
    return [name, stat.st_size, stat.st_mtime_ns]


def fingerprint(*parts: object) -> str:
    """SHA-256 (hex, 32 characters) of ``parts`` as JSON (non-JSON values by their ``str``) and the code version."""
    text = json.dumps([code_version(), *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Unit:
    """One cached piece of work: ``compute()`` is called only when ``section/key`` is not in the cache.

    ``valid`` (optional) is asked about a cached result before it is used (e.g. "the figure file still exists").
    """

    section: str
    name: str
    key: str
    compute: Callable[[], Any]
    valid: Callable[[Any], bool] | None = None


@dataclass
class _Record:
    """A warning a unit raised, kept to be replayed in the parent (a logging record or a Python warning)."""

    logger: str
    level: int
    msg: object
    args: tuple[object, ...]
    where: tuple[str, int, str] | None = None  # Python warnings: (filename, lineno, category), for deduplication


@dataclass
class _Outcome:
    result: Any
    records: list[_Record] = field(default_factory=list)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[_Record] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        msg: object = record.msg
        try:
            pickle.dumps((msg, args))
        except Exception:  # an argument that cannot travel: keep its text
            msg, args = record.getMessage(), ()
        self.records.append(_Record(record.name, record.levelno, msg, args))


#: Units of the current call, read by forked workers by index (a fork copies them, closures included).
_UNITS: list[Unit] = []


def _execute(index: int) -> _Outcome:
    """Run unit ``index`` with its warnings captured instead of handled."""
    unit = _UNITS[index]
    collector = _Collector()
    root = logging.getLogger()
    handlers, root.handlers = root.handlers, [collector]

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line)
        collector.records.append(
            _Record("py.warnings", logging.WARNING, "%s", (text,), (filename, lineno, category.__name__))
        )

    try:
        with warnings.catch_warnings():
            # Every occurrence is captured here; the once-per-place rule of the default filter is applied at
            # replay over all units in order, so it does not depend on which process ran which unit.
            filters: list[Any] = warnings.filters  # type: ignore[assignment]
            filters[:] = [("always", *f[1:]) if f[0] in ("default", "module", "once") else f for f in filters]
            warnings.filterwarnings("always", append=True)  # in place of the default action
            warnings.showwarning = show
            result = unit.compute()
    finally:
        root.handlers = handlers
    return _Outcome(result, collector.records)


def _init_worker() -> None:
    from threadpoolctl import threadpool_limits

    global _LIMITS  # kept alive for the worker's life
    _LIMITS = threadpool_limits(limits=1)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


_LIMITS: object = None


class UnitCache:
    """``results/.cache/<section>/<key>.pkl``; ``computed`` lists ``section/name`` of every unit computed."""

    def __init__(self, results: Path, enabled: bool = True) -> None:
        self.folder = results / CACHE_DIR
        self.enabled = enabled
        self.computed: list[str] = []
        self.used: set[Path] = set()
        self._seen_warnings: set[tuple[str, int, str, str]] = set()

    def _path(self, unit: Unit) -> Path:
        return self.folder / unit.section / f"{unit.key}.pkl"

    def _load(self, unit: Unit) -> _Outcome | None:
        path = self._path(unit)
        if not self.enabled or not path.is_file():
            return None
        try:
            outcome = pickle.loads(path.read_bytes())
        except Exception as exc:  # a cache file from another version of a library: compute again
            log.info("%s: unreadable cache entry (%s); recomputed", path, exc)
            return None
        if not isinstance(outcome, _Outcome) or (unit.valid is not None and not unit.valid(outcome.result)):
            return None
        return outcome

    def run(self, units: Sequence[Unit], workers: int = 1, progress: SectionProgress | None = None) -> list[Any]:
        """Results of ``units`` in their order: from the cache where fresh, else computed (over ``workers``)."""
        outcomes: list[_Outcome | None] = [self._load(unit) for unit in units]
        sections = list(dict.fromkeys(unit.section for unit in units))
        if progress is not None:
            for section in sections:
                progress.start(section, sum(unit.section == section for unit in units))
                for unit, outcome in zip(units, outcomes, strict=True):
                    if unit.section == section and outcome is not None:
                        progress.advance(section)
        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
        global _UNITS
        _UNITS = list(units)
        try:
            for i, outcome in self._compute(todo, workers):
                outcomes[i] = outcome
                unit = units[i]
                self.computed.append(f"{unit.section}/{unit.name}")
                log.debug("computed %s/%s", unit.section, unit.name)  # counted by the tests
                if self.enabled:
                    write_bytes(self._path(unit), pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
                if progress is not None:
                    progress.advance(unit.section)
        finally:
            _UNITS = []
        results = []
        for unit, outcome in zip(units, outcomes, strict=True):
            assert outcome is not None
            self.used.add(self._path(unit))
            self._replay(outcome.records)
            results.append(outcome.result)
        return results

    def _compute(self, todo: list[int], workers: int) -> Iterable[tuple[int, _Outcome]]:
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                yield i, _execute(i)
            return
        context = multiprocessing.get_context("fork")
        with cf.ProcessPoolExecutor(min(workers, len(todo)), mp_context=context, initializer=_init_worker) as pool:
            futures = {pool.submit(_execute, i): i for i in todo}
            for future in cf.as_completed(futures):
                yield futures[future], future.result()

    def _replay(self, records: list[_Record]) -> None:
        for record in records:
            if record.where is not None:
                text = str(record.args[0]) if record.args else str(record.msg)
                seen = (*record.where, text)
                if seen in self._seen_warnings:  # Python's default filter shows a warning once per place
                    continue
                self._seen_warnings.add(seen)
            logging.getLogger(record.logger).log(record.level, record.msg, *record.args)

    def prune(self) -> int:
        """Remove cache entries no unit of this report used (after a full report); returns how many."""
        removed = 0
        if self.folder.is_dir():
            for path in self.folder.glob("*/*.pkl"):
                if path not in self.used:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


__all__ = ["SectionProgress", "Unit", "UnitCache", "code_version", "file_stamp", "fingerprint"]
