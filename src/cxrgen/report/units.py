"""The report's units of work: fingerprinted, cached under ``results/.cache/`` and run over processes.

A *unit* is one piece of one section that depends on a few inputs only: the AUCs of one predictions file, one
paired comparison, the shift analyses of one file, one figure. Its *fingerprint* hashes what it reads (each
predictions file's relative path, size and ``mtime_ns``, the study files, the config settings it uses) and the
code version (a hash of cxrgen's sources), so a rerun after adding one run recomputes only the units whose inputs
that run touches; the others are read back from ``results/.cache/<section>/<fingerprint>.pkl`` (written
atomically). Delete the folder to start afresh.

A study folder may be shared, and unpickling a file someone else wrote can run any code, so every cache file is
``HMAC-SHA256(key, "<section>/<fingerprint>" NUL payload) + payload`` under a secret key of the user
(:func:`cache_key`: ``$XDG_CACHE_HOME/cxrgen/report-cache.key``, default ``~/.cache/cxrgen/``, 32 random bytes, mode
0600). The signature is checked (:func:`hmac.compare_digest`) before anything is unpickled; a file that fails
(written by another user, by another key, altered, or moved to another entry's name) is a miss: computed again and
overwritten, never loaded.

Units run in the calling process (``workers=1``) or in a pool of forked processes (``workers>1``; each worker's
native thread pools limited to one thread). Either way a unit's warnings are captured with its result and
replayed in unit order, and the results are returned in unit order, so the files written do not depend on the
number of workers or on what came from the cache.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import hmac
import json
import logging
import multiprocessing
import os
import pickle
import secrets
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from cxrgen.utils.fileio import write_bytes
from cxrgen.utils.processes import die_with_parent

log = logging.getLogger(__name__)

CACHE_DIR = ".cache"
KEY_FILE = "report-cache.key"
KEY_BYTES = 32
SIGNATURE_BYTES = hashlib.sha256().digest_size


def key_path() -> Path:
    """``$XDG_CACHE_HOME/cxrgen/report-cache.key`` (``~/.cache/cxrgen/...`` when the variable is unset or empty)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxrgen" / KEY_FILE


def cache_key(path: Path | None = None) -> bytes:
    """The user's secret key for signing cache files, created (32 random bytes, mode 0600) on first use."""
    path = key_path() if path is None else path
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) == KEY_BYTES:
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(KEY_BYTES)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        try:
            os.link(temporary, path)  # first writer wins: a concurrent report keeps the same key
        except FileExistsError:
            existing = path.read_bytes()
            if len(existing) == KEY_BYTES:
                return existing
            os.replace(temporary, path)  # a damaged key file: replaced (its cache entries become misses)
    finally:
        temporary.unlink(missing_ok=True)
    return key


def sign(key: bytes, name: str, payload: bytes) -> bytes:
    """HMAC-SHA256 of ``payload`` bound to the entry ``name`` (``section/fingerprint``)."""
    return hmac.new(key, name.encode() + b"\0" + payload, hashlib.sha256).digest()


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
    """One thread per worker, and no worker outliving a report killed outright (it would sleep on forever)."""
    from threadpoolctl import threadpool_limits

    die_with_parent()

    global _LIMITS  # kept alive for the worker's life
    _LIMITS = threadpool_limits(limits=1)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


_LIMITS: object = None


class UnitCache:
    """``results/.cache/<section>/<key>.pkl``; ``computed`` lists ``section/name`` of every unit computed."""

    def __init__(self, results: Path, enabled: bool = True, key: bytes | None = None) -> None:
        self.folder = results / CACHE_DIR
        self.enabled = enabled
        self._key = key
        self.computed: list[str] = []
        self.used: set[Path] = set()
        self._seen_warnings: set[tuple[str, int, str, str]] = set()

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = cache_key()
        return self._key

    def _path(self, unit: Unit) -> Path:
        return self.folder / unit.section / f"{unit.key}.pkl"

    def _load(self, unit: Unit) -> _Outcome | None:
        path = self._path(unit)
        if not self.enabled or not path.is_file():
            return None
        data = path.read_bytes()
        signature, payload = data[:SIGNATURE_BYTES], data[SIGNATURE_BYTES:]
        if not hmac.compare_digest(signature, sign(self.key, f"{unit.section}/{unit.key}", payload)):
            log.warning("%s: cache entry not signed by this user's key (%s); not loaded, recomputed", path, key_path())
            return None
        try:
            outcome = pickle.loads(payload)  # only after the signature verified: a file this user's report wrote
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
                    payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
                    signature = sign(self.key, f"{unit.section}/{unit.key}", payload)
                    write_bytes(self._path(unit), signature + payload)
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


__all__ = ["SectionProgress", "Unit", "UnitCache", "cache_key", "code_version", "file_stamp", "fingerprint", "key_path",
           "sign"]
