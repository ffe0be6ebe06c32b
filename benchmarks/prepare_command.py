"""``cxrgen prepare --until cache`` as a command on the 110 real NIH PNGs, ``engine: exact`` against ``skimage``.

The ratio the README states is the commands', not the functions': each run is ``python -m cxrgen prepare STUDY
--until cache --workers N`` in a fresh interpreter, under ``/usr/bin/time -v`` (wall, user, sys, peak RSS), on a
fresh output folder, engines alternating so that a load change on the machine hits both. ``--src`` times another
checkout's code on the same data (``--src /work/main/src`` for the code before a change). The study: the real NIH
metadata cut to the images in ``../shared/realdata/nih/images_1024`` (copied into a temporary dataset root),
random patient-level splits, 224 px, CLAHE on.

    .venv/bin/python benchmarks/prepare_command.py [--repeats 3] [--workers 1] [--src src ...] [--profile]

``--profile`` runs the ``exact`` command once more under cProfile and prints its 25 largest cumulative entries.
``--breakdown`` splits the commands' CPU time into what every command pays (``--until splits``: interpreter, CLI,
manifest, splits), the image libraries' imports and numba's kernels, and per image decode and each engine (one
process, one thread, the same files), and prints the ratio an infinitely fast ``exact`` engine would reach.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "nih"
ENGINES = ("exact", "skimage")
STUDY = """name: nih-real-{engine}
out: {out}
datasets:
  nih: {{reader: nih, root: {root}}}
labels: [Atelectasis, Cardiomegaly, Consolidation, Edema, Effusion]
splits:
  nih: {{method: random, fractions: {{train: 0.4, val: 0.1, test: 0.5}}, seed: 0}}
preprocess: {{clahe: true, engine: {engine}, size: 224}}
architectures: [densenet121]
configurations:
  - {{name: nih, train: [nih], internal: [nih]}}
"""


def write_dataset(root: Path, copies: int = 1) -> int:
    """An NIH dataset root: ``images/`` with the real PNGs, ``Data_Entry_2017_v2020.csv`` with their rows only.

    ``copies`` > 1 writes every image and its row that many times (copy ``k`` renamed ``k_<name>``, patient id
    ``k`` * 100,000 + its own): a larger study of the same pixels, where start-up weighs less per image.
    """
    images = sorted((REALDATA / "images_1024").glob("*.png"))
    (root / "images").mkdir(parents=True)
    names = {path.name for path in images}
    with gzip.open(REALDATA / "metadata" / "Data_Entry_2017_v2020.csv.gz", "rt", encoding="utf-8") as source:
        lines = source.read().splitlines()
    rows = [line.split(",") for line in lines[1:] if line.split(",", 1)[0] in names]
    kept = [lines[0]]
    for copy in range(copies):
        prefix = f"{copy}_" if copy else ""
        for path in images:
            shutil.copyfile(path, root / "images" / f"{prefix}{path.name}")
        for row in rows:  # Image Index, ..., Patient ID in the fourth column
            kept.append(",".join([prefix + row[0], *row[1:3], str(copy * 100_000 + int(row[3])), *row[4:]]))
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return len(kept) - 1


def time_command(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall, user and sys seconds and peak RSS (MiB) of one command, from ``/usr/bin/time -v``."""
    done = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    text = done.stderr

    def field(name: str) -> str:
        match = re.search(rf"{re.escape(name)}: (.+)", text)
        if match is None:
            raise SystemExit(f"/usr/bin/time printed no {name!r}:\n{text[-2000:]}")
        return match.group(1).strip()

    wall = 0.0
    for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    return {
        "wall": wall,
        "user": float(field("User time (seconds)")),
        "sys": float(field("System time (seconds)")),
        "rss": float(field("Maximum resident set size (kbytes)")) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--src", type=Path, nargs="+", default=[Path(__file__).resolve().parents[1] / "src"],
                        help="source folders (PYTHONPATH) to time, alternating with each other")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="also profile one exact command per --src")
    parser.add_argument("--breakdown", action="store_true", help="also split the CPU time into its parts")
    parser.add_argument("--copies", type=int, default=1,
                        help="each image and its row this many times, renamed: start-up weighs less")  # fmt: skip
    args = parser.parse_args()
    if not REALDATA.is_dir():
        raise SystemExit(f"{REALDATA} is absent: this benchmark needs the real NIH images")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        count = write_dataset(folder / "nih", args.copies)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        load = [os.getloadavg()[0]]
        for _ in range(args.repeats):
            for src in args.src:
                for engine in ENGINES:
                    results.setdefault((str(src), engine), []).append(run_once(folder, src, engine, args.workers))
        load.append(os.getloadavg()[0])
        copies = f" ({count // args.copies} x {args.copies})" if args.copies > 1 else ""
        print(f"cxrgen prepare STUDY --until cache --workers {args.workers}: {count} real NIH PNGs{copies} -> 224 px,")
        print(f"fresh output folder per run, {args.repeats} runs alternating; load average {load[0]:.1f} before, "
              f"{load[1]:.1f} after, {os.cpu_count()} cores\n")  # fmt: skip
        print("| code | engine | wall s (median) | user+sys s (median) | max RSS MiB | runs: wall / cpu s |")
        print("|---|---|---|---|---|---|")
        medians: dict[tuple[str, str], tuple[float, float]] = {}
        for (src, engine), runs in results.items():
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["user"] + r["sys"] for r in runs)
            medians[(src, engine)] = (wall, cpu)
            each = ", ".join(f"{r['wall']:.1f}/{r['user'] + r['sys']:.1f}" for r in runs)
            rss = max(r["rss"] for r in runs)
            print(f"| {src} | {engine} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {each} |")
        print()
        for src in args.src:
            exact_wall, exact_cpu = medians[(str(src), "exact")]
            paper_wall, paper_cpu = medians[(str(src), "skimage")]
            print(f"{src}: skimage / exact = {paper_wall / exact_wall:.2f}x wall, {paper_cpu / exact_cpu:.2f}x CPU")
        if args.profile:
            for src in args.src:
                profile(folder, src, args.workers)
        if args.breakdown:
            breakdown(folder, args.src[-1], args.repeats)


def _study(folder: Path, engine: str, tag: str) -> Path:
    """A fresh study file whose output folder does not exist yet."""
    out = folder / "out" / f"{engine}-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    study = folder / f"study-{engine}-{tag}.yaml"
    study.write_text(STUDY.format(engine=engine, out=out, root=folder / "nih"), encoding="utf-8")
    return study


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def run_once(folder: Path, src: Path, engine: str, workers: int) -> dict[str, float]:
    study = _study(folder, engine, "run")
    command = [sys.executable, "-m", "cxrgen", "prepare", str(study), "--until", "cache", "--workers", str(workers)]
    return time_command(command, _env(src))


def profile(folder: Path, src: Path, workers: int) -> None:
    """One ``exact`` command under cProfile; its largest cumulative entries."""
    study = _study(folder, "exact", "profile")
    stats = folder / "prepare.prof"
    command = [sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "cxrgen", "prepare", str(study),
               "--until", "cache", "--workers", str(workers)]  # fmt: skip
    subprocess.run(command, env=_env(src), capture_output=True, check=True)
    import pstats

    print(f"\ncProfile of the exact command, {src} (cumulative s)")
    pstats.Stats(str(stats)).sort_stats("cumulative").print_stats(25)


# Per-image CPU seconds in one process, one thread: decode, then each engine on the decoded image; and what
# loading the image libraries and numba's cached kernels costs beyond the CLI's own imports.
_PARTS = """
import sys, time
from pathlib import Path
import cxrgen.cli, cxrgen.runner.prepare  # loaded by every prepare command: counted in --until splits
began = time.process_time()
from cxrgen.utils.threads import pin_one_thread
from cxrgen.data.cache import build_cache
from cxrgen.images.preprocess import compile_ahead
try:  # what the cache calls: 8-bit pixels as they are (issue 30); older code decodes to float
    from cxrgen.images.preprocess import decode_pixels as decode, preprocess_pixels as preprocess_array
except ImportError:
    from cxrgen.images.preprocess import decode, preprocess_array
from cxrgen.utils.heap import reused_heap
pin_one_thread()
compile_ahead()
loaded = time.process_time()
paths = sorted(Path(sys.argv[1]).glob("*.png"))
with reused_heap():  # as the cache's loop
    start = time.process_time()
    for path in paths:
        decode(path)
    decoded = time.process_time()
    images = [decode(path) for path in paths[:8]]
    preprocess_array(images[0], 224, "skimage")
    times = []
    for engine in ("exact", "skimage"):
        start_engine = time.process_time()
        for image in images:
            preprocess_array(image, 224, engine)
        times.append((time.process_time() - start_engine) / len(images))
print(loaded - began, (decoded - start) / len(paths), *times)
"""


def breakdown(folder: Path, src: Path, repeats: int) -> None:
    """The commands' CPU time in parts (medians of ``repeats``), and the ratio with an engine that costs nothing."""
    splits, parts = [], []
    for _ in range(repeats):
        study = _study(folder, "exact", "splits")
        command = [sys.executable, "-m", "cxrgen", "prepare", str(study), "--until", "splits"]
        run = time_command(command, _env(src))
        splits.append(run["user"] + run["sys"])
        done = subprocess.run([sys.executable, "-c", _PARTS, str(folder / "nih" / "images")], env=_env(src),
                              capture_output=True, text=True, check=True)  # fmt: skip
        parts.append([float(value) for value in done.stdout.split()])
    fixed = statistics.median(splits)
    loading, decode, exact, paper = (statistics.median(column) for column in zip(*parts, strict=True))
    count = sum(1 for _ in (folder / "nih" / "images").glob("*.png"))
    print(f"\nCPU time in parts ({src}, medians of {repeats}; one process, one thread)\n")
    print("| part | s |")
    print("|---|---|")
    print(f"| `prepare --until splits` (interpreter, CLI, manifest, splits) | {fixed:.2f} |")
    print(f"| image libraries' imports and numba's cached kernels | {loading:.2f} |")
    print(f"| decode, per image (ms) | {1000 * decode:.1f} |")
    print(f"| exact engine, per decoded image (ms) | {1000 * exact:.1f} |")
    print(f"| skimage engine, per decoded image (ms) | {1000 * paper:.1f} |")
    shared = fixed + loading + count * decode
    print(f"\nengines alone: skimage / exact = {paper / exact:.1f}x; predicted commands: exact "
          f"{shared + count * exact:.2f} s, skimage {shared + count * paper:.2f} s "
          f"({(shared + count * paper) / (shared + count * exact):.2f}x); with an exact engine that costs nothing: "
          f"{(shared + count * paper) / shared:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
