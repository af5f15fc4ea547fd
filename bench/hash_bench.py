"""Benchmark of modelvault's hashing, each figure printed against a floor measured in the same run.

    python bench/hash_bench.py                  # full sizes: 2 GiB and 4 GiB files
    python bench/hash_bench.py --cache-gib 0.5 --rss-gib 1 --repeat 2   # quicker
    python bench/hash_bench.py --skip abd --tiny-files 10000            # (c) only

(a) ``hash_file`` on a file already in the page cache, against the SHA-256
    compute limit of this CPU (``openssl speed -evp sha256 -bytes 65536``);
    target: ratio >= 0.85. A plain readinto+update loop and ``openssl dgst`` are
    printed as context.
(b) the worker pool with 1 and 2 workers on 8 files of 256 MiB, against openssl.
(c) rows/s through the worker on tiny files, 1 and 2 workers, on SQLite and (with
    ``--postgres`` or MODELVAULT_TEST_POSTGRES_URL) PostgreSQL, against the bare
    loop of the same writes; on PostgreSQL also the rate as the catalog grows
    (see ``bench_worker_rows``); and on SQLite the pool against one worker on
    mixes of file sizes (``--no-mixes`` to skip).
(d) peak RSS of a child process hashing a big file; target < 100 MB.

The big files are created in a temporary folder (``--dir`` to choose where) and
deleted afterwards. On a busy machine run it a few times: the figures are the
best of ``--repeat`` runs, with the median alongside.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from scratch_db import ScratchCatalogs, plain_postgres  # noqa: E402

from modelvault.database import DatabaseManager  # noqa: E402
from modelvault.hashing import DEFAULT_CHUNK_SIZE, hash_file, hash_file_digest  # noqa: E402
from modelvault.identify.catalog import HeaderTap  # noqa: E402

GIB = 1024**3
MIB = 1024**2
RATIO_TARGET = 0.85
TAP_RATIO_TARGET = 0.9  # hash_file with the header reader, against hash_file alone
RSS_TARGET_BYTES = 100 * 10**6
WORKER_RATIO_TARGET = 1.5

# Run in a child so its peak RSS is its own: the interpreter and imports alone, then after hashing.
RSS_CHILD = """
import resource, sys
from modelvault.hashing import hash_file
def peak_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
base = peak_kib()
hash_file(sys.argv[1])
print(base, peak_kib())
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-gib", type=float, default=2.0, help="size for (a) [2]")
    parser.add_argument("--rss-gib", type=float, default=4.0, help="size for (d) [4]")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure in (a) [3]")
    parser.add_argument("--openssl-seconds", type=int, default=3, help="for openssl speed [3]")
    parser.add_argument("--chunk-mib", type=float, default=None, help="chunk_size for hash_file")
    parser.add_argument("--dir", type=Path, default=None, help="where to create the big files")
    parser.add_argument("--skip", default="", help="letters of the parts to skip, e.g. 'd'")
    parser.add_argument("--tiny-files", type=int, default=10_000, help="files for (c) [10000]")
    parser.add_argument(
        "--growth-rows", type=int, default=20_000, help="rows of (c)'s growth run [20000; 0: none]"
    )
    parser.add_argument(
        "--no-mixes",
        dest="mixes",
        action="store_false",
        help="in (c), skip the pool on mixes of file sizes",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("MODELVAULT_TEST_POSTGRES_URL"),
        help="a PostgreSQL URL whose user may create databases, for (c) "
        "[MODELVAULT_TEST_POSTGRES_URL; none: SQLite only]",
    )
    args = parser.parse_args(argv)
    chunk = int(args.chunk_mib * MIB) if args.chunk_mib else DEFAULT_CHUNK_SIZE

    print(
        f"modelvault hash benchmark: Python {platform.python_version()}, "
        f"{_openssl_version()}, {os.cpu_count()} CPUs, chunk {chunk / MIB:g} MiB"
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="modelvault-bench-", dir=args.dir) as tmp:
        if "a" not in args.skip:
            ok &= bench_cached(Path(tmp), int(args.cache_gib * GIB), chunk, args)
        if "b" not in args.skip:
            bench_pool(args)
        if "c" not in args.skip:
            bench_worker_rows(args)
        if "d" not in args.skip:
            ok &= bench_peak_rss(Path(tmp), int(args.rss_gib * GIB))
    return 0 if ok else 1


# (a) -------------------------------------------------------------------------------------


def bench_cached(tmp: Path, size: int, chunk: int, args: argparse.Namespace) -> bool:
    path = tmp / "cached.bin"
    _make_file(path, size)
    print(
        f"(a) hashing a {size / GIB:g} GiB file in the page cache, best of {args.repeat} "
        f"(load average before: {_load()}):"
    )
    limit_before = _openssl_speed(args.openssl_seconds)

    def run(fn: Callable[[], object], times: int = args.repeat) -> list[float]:
        rates = []
        for _ in range(times):
            _warm(path)  # again each time: the kernel may have evicted part of it meanwhile
            start = time.perf_counter()
            fn()
            rates.append(size / (time.perf_counter() - start))
        return rates

    ok = True
    # The worker's read: the header reader on the same chunks (and AutoV3 where asked).
    # Runs taken in turns, so a burst of other work on the machine hits both sides alike.
    plain_rates, tapped_rates = [], []
    for _ in range(args.repeat):
        plain_rates += run(lambda: hash_file(path, chunk_size=chunk), 1)
        tapped_rates += run(lambda: _tapped(path, chunk, autov3=False), 1)
    lines = [("hash_file", plain_rates), ("with the header reader", tapped_rates)]
    lines.append(("with the header reader and AutoV3", run(lambda: _tapped(path, chunk, True))))
    lines.append(("context: plain readinto+update loop", run(lambda: _plain_hash(path, chunk))))
    # What two digests at once can reach on this machine now (another session's work, or
    # two vCPUs that are one core's hyperthreads, leave less than two cores): two plain
    # loops in two threads, the rate of each. AutoV3 beside the SHA-256 cannot beat it.
    lines.append(("context: two plain loops at once", run(lambda: _two_at_once(path, chunk))))
    if shutil.which("openssl"):
        openssl = ["openssl", "dgst", "-sha256", str(path)]
        lines.append(("context: openssl dgst -sha256", run(lambda: _quiet(openssl))))
    # Measured before and after, and the best taken: the same rule as for the runs above, so
    # that a burst of other work on the machine cannot make the ratio look better than it is.
    limit_after = _openssl_speed(args.openssl_seconds)
    limit = None if limit_before is None or limit_after is None else max(limit_before, limit_after)
    if limit is None:
        print("    SHA-256 compute limit: not available (no openssl command)")
    else:
        print(
            f"    SHA-256 compute limit (openssl speed, 64 KiB blocks): {_rate(limit)} "
            f"(before {_rate(limit_before or 0).strip()}, after {_rate(limit_after or 0).strip()})"
        )
    plain = max(lines[0][1])
    for label, rates in [*lines[1:3], lines[4]]:
        ratio = max(rates) / plain
        met = label != "with the header reader" or ratio >= TAP_RATIO_TARGET
        ok &= met
        target = f" (target >= {TAP_RATIO_TARGET}: {'met' if met else 'MISSED'})"
        print(
            f"    {label}: {ratio:.3f} of hash_file's rate in this run"
            + (target if label == "with the header reader" else "")
        )
    for label, rates in lines:
        best = max(rates)
        text = f"    {label + ':':38} {_rate(best)} (median {_rate(statistics.median(rates))})"
        if limit is not None:
            text += f"  ratio {best / limit:.3f}"
            if label == "hash_file":
                met = best / limit >= RATIO_TARGET
                ok &= met
                text += f" (target >= {RATIO_TARGET}: {'met' if met else 'MISSED'})"
        print(text)
    print(f"    (load average after: {_load()}; other work on the machine lowers the ratio)")
    path.unlink()
    return ok


def _tapped(path: Path, chunk: int, autov3: bool) -> None:
    tap = HeaderTap(autov3=autov3)
    hash_file_digest(path, chunk_size=chunk, tap=tap, beside=tap.beside())
    found = tap.found(path.name)
    assert "problem" not in found["identify"], found
    assert not autov3 or found["autov3"], "no AutoV3: the file is not a safetensors file"


def _openssl_speed(seconds: int) -> float | None:
    """Bytes/s of `openssl speed -evp sha256` on 64 KiB blocks, or None without openssl."""
    if not shutil.which("openssl"):
        return None
    out = subprocess.run(
        ["openssl", "speed", "-evp", "sha256", "-bytes", "65536", "-seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The table's last line: "sha256   1953584.47k", in thousands of bytes per second.
    match = re.search(r"^sha256\s+([\d.]+)k\s*$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"cannot read the rate from openssl speed's output:\n{out}")
    return float(match.group(1)) * 1000


def _openssl_version() -> str:
    import ssl

    return ssl.OPENSSL_VERSION


def _plain_hash(path: Path, chunk: int) -> str:
    """The simplest streaming loop, for comparison: one thread, one buffer."""
    sha = hashlib.sha256()
    buffer = memoryview(bytearray(chunk))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            sha.update(buffer[:n])
    return sha.hexdigest()


def _two_at_once(path: Path, chunk: int) -> None:
    threads = [threading.Thread(target=_plain_hash, args=(path, chunk)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# (b), (c) -----------------------------------------------------------------


def _worker_module() -> object | None:
    try:
        import modelvault.migration.worker as worker
    except ImportError:
        return None
    return worker


def _timed_pool(db: DatabaseManager, workers: int | None, count: int) -> float:
    """Seconds for process_pending to catalogue ``count`` staged files (db is disposed)."""
    from modelvault.migration.worker import process_pending

    start = time.perf_counter()
    report = process_pending(db, workers=workers)
    seconds = time.perf_counter() - start
    db.dispose()
    assert report.imported == count, report
    return seconds


def bench_pool(args: argparse.Namespace) -> None:
    """(b) the worker pool on 8 files of 256 MiB vs ``openssl dgst -sha256`` over them in turn.

    The floor is one openssl process hashing the files one after another; the
    pool is ``process_pending`` with 1 and 2 workers on a fresh SQLite catalog
    with the 8 files staged (so claims, leases and commits are included).
    Everything is in the page cache first. Target on 2 cores: pool(2) time /
    openssl time <= 0.6. Best of ``--repeat`` runs each, the median alongside.
    """
    if _worker_module() is None:
        print("(b) worker pool: not yet available (modelvault.migration.worker cannot be imported)")
        return
    from modelvault import DatabaseManager, Settings

    count, size, target = 8, 256 * MIB, 0.6
    chunk = int(args.chunk_mib * MIB) if args.chunk_mib else DEFAULT_CHUNK_SIZE
    with tempfile.TemporaryDirectory(prefix="modelvault-bench-pool-", dir=args.dir) as tmp:
        folder = Path(tmp)
        files = [folder / f"model-{i}.safetensors" for i in range(count)]
        for path in files:
            _make_file(path, size)

        def pool_seconds(workers: int, run: int) -> float:
            url = f"sqlite:///{folder / f'catalog-{workers}-{run}.sqlite3'}"
            db = DatabaseManager(url, settings=Settings(db_url=url, hash_chunk_bytes=chunk))
            db.init_db()
            for path in files:
                db.add_pending_import({"path": str(path), "size_bytes": size})
            for path in files:
                _warm(path)
            return _timed_pool(db, workers, count)

        def openssl_seconds() -> float:
            for path in files:
                _warm(path)
            start = time.perf_counter()
            _quiet(["openssl", "dgst", "-sha256", *map(str, files)])
            return time.perf_counter() - start

        print(
            f"(b) worker pool on {count} files of {size // MIB} MiB, best of {args.repeat} "
            f"(load average before: {_load()}):"
        )
        total = count * size
        floor = None
        if shutil.which("openssl"):
            floor_runs = [openssl_seconds() for _ in range(args.repeat)]
            floor = min(floor_runs)
            print(
                f"    {'openssl dgst -sha256, one file after another:':48} {floor:6.2f} s "
                f"{_rate(total / floor)} (median {statistics.median(floor_runs):.2f} s)"
            )
        for workers in (1, 2):
            runs = [pool_seconds(workers, run) for run in range(args.repeat)]
            best = min(runs)
            text = (
                f"    {f'process_pending, {workers} worker(s):':48} {best:6.2f} s "
                f"{_rate(total / best)} (median {statistics.median(runs):.2f} s)"
            )
            if floor is not None:
                text += f"  ratio {best / floor:.3f}"
                if workers == 2:
                    met = best / floor <= target
                    text += f" (target <= {target}: {'met' if met else 'MISSED'})"
            print(text)
        print(f"    (load average after: {_load()})")


def bench_worker_rows(args: argparse.Namespace) -> None:
    """(c) rows/s through the worker on tiny files, where the catalog is the cost.

    ``--tiny-files`` files of 64 B to 4 KiB are staged (0 to 2 of 20 tags each)
    in a fresh catalog per run. The floor, on each backend, is the bare loop of
    the same writes: claim the 32 oldest pending rows in one transaction
    (select them, mark them claimed with an owner and a lease), read and hash
    them, then in a second transaction insert their models, get-or-create their
    tags (ids cached), link them and delete their staging rows. SQLite: the
    ``sqlite3`` module, same pragmas (WAL, synchronous NORMAL, foreign keys),
    ``BEGIN IMMEDIATE``; PostgreSQL: psycopg, ``FOR UPDATE SKIP LOCKED``. It
    takes no lease it ever checks, looks nothing up, cannot be stopped or
    resumed: it is what the work costs at the least. It does not identify the
    files either, which the worker must: a second floor (``floor+identify``)
    is the same loop reading each header from the bytes hashed (``HeaderTap``)
    and writing what it says to the model's meta. The target stays on the
    first; the second shows what part of the gap identification is.

    Measured against it: ``process_pending`` with 1 and with 2 workers. Printed:
    rows/s, ratio to the floor, and 2 workers / 1 worker (> 1: the pool lost).
    Targets: 1 worker <= 1.5x the floor; the pool never slower than
    one worker. Medians of ``--repeat`` runs, interleaved, each in turn first.

    On PostgreSQL, also the rate as the catalog grows: rows/s in the first and
    in the last fifth of a run of ``--growth-rows`` rows, for the floor and for
    1 worker; a last/first well below 1 means a plan that no longer fits (a
    generic plan made while ``models`` was empty).
    """
    if _worker_module() is None:
        print("(c) rows/s through the worker: not available (no modelvault.migration.worker)")
        return
    backends = ["sqlite"] + ([] if args.postgres is None else ["postgresql"])
    with tempfile.TemporaryDirectory(prefix="modelvault-bench-rows-", dir=args.dir) as tmp:
        folder = Path(tmp)
        files = TinyFiles(folder / "files", max(args.tiny_files, args.growth_rows))
        print(
            f"(c) rows/s through the worker, {args.tiny_files:,} tiny files, medians of "
            f"{args.repeat} (load average before: {_load()}):"
        )
        for backend in backends:
            catalogs = ScratchCatalogs(backend, folder, args.postgres)
            try:
                _rows_per_backend(catalogs, files, args)
                if backend == "postgresql" and args.growth_rows:
                    _rate_as_catalog_grows(catalogs, files, args.growth_rows)
            finally:
                catalogs.drop_all()
        if args.mixes:
            _pool_on_mixes(folder, args.repeat)
        print(f"    (load average after: {_load()})")


# Mixes of file sizes for the pool: (label, number of files, size of file i).
MIXES: list[tuple[str, int, Callable[[random.Random, int], int]]] = [
    # Either side of the worker's LIGHT_BATCH_BYTES (4 MiB a batch of 32): one worker
    # on the first, some batches in parallel on the second, all of them on the third.
    ("1,500 files of 32-96 KiB", 1500, lambda rng, i: rng.randrange(32, 96) * 1024),
    ("1,000 files of 64-192 KiB", 1000, lambda rng, i: rng.randrange(64, 192) * 1024),
    ("1,000 files of 128-384 KiB", 1000, lambda rng, i: rng.randrange(128, 384) * 1024),
    ("300 files of 0.5-1.5 MiB", 300, lambda rng, i: rng.randrange(512, 1536) * 1024),
    ("100 files of 2-6 MiB", 100, lambda rng, i: rng.randrange(2048, 6144) * 1024),
    (
        "1,000 tiny files, every 100th of 32 MiB",
        1000,
        lambda rng, i: 32 * MIB if i % 100 == 99 else rng.randrange(64, 4096),
    ),
]


def _pool_on_mixes(folder: Path, repeat: int) -> None:
    """The pool against one worker on mixes of file sizes (SQLite): is it ever slower?

    Target: 2 workers never take longer than 1 (ratio <= 1; within a few
    per cent is noise on a shared machine: look at the runs).
    """
    from sqlalchemy import insert

    from modelvault import Settings
    from modelvault.db.models import PendingImport

    print("    sqlite, the pool on mixes of file sizes (medians):")
    for number, (label, count, size_of) in enumerate(MIXES):
        rng = random.Random(number)
        mix = folder / f"mix{number}"
        mix.mkdir()
        block = rng.randbytes(32 * MIB)
        rows = []
        for i in range(count):
            path = mix / f"{i:05d}.bin"
            size = size_of(rng, i)
            # Unique content: the file's number, then a slice of the shared random block.
            path.write_bytes(b"%08d" % i + block[: max(size - 8, 0)])
            rows.append({"path": str(path), "name": path.name, "size_bytes": path.stat().st_size})
        runs: dict[int, list[float]] = {1: [], 2: []}
        for run in range(repeat):
            for workers in _turns([1, 2], run):
                url = f"sqlite:///{mix / f'catalog-{workers}-{run}.sqlite3'}"
                db = DatabaseManager(url, settings=Settings(db_url=url))
                db.init_db()
                with db.session_scope() as session:
                    session.execute(insert(PendingImport), rows)
                runs[workers].append(_timed_pool(db, workers, count))
        one, two = (statistics.median(runs[w]) for w in (1, 2))
        print(
            f"      {label + ':':42} 1 worker {one:5.2f} s, 2 workers {two:5.2f} s: "
            f"{two / one:.2f}x the time of 1 worker (target <= 1: "
            f"{'met' if two <= one else 'MISSED'})  "
            f"[runs: {', '.join(f'{t:.2f}' for t in runs[1])} / "
            f"{', '.join(f'{t:.2f}' for t in runs[2])} s]"
        )
        shutil.rmtree(mix)


def _turns(what: list[Any], run: int) -> list[Any]:
    """The order of run ``run``: each in turn goes first, so that what a run leaves
    behind (pages for the kernel to write back, a warm cache) does not always
    fall on the same one."""
    shift = run % len(what)
    return what[shift:] + what[:shift]


class TinyFiles:
    """``count`` files of 64 B to 4 KiB and their staging rows (0 to 2 of 20 tags each)."""

    def __init__(self, folder: Path, count: int) -> None:
        from modelvault.db.types import utcnow

        rng = random.Random(count)
        tag_pool = [{"name": f"tag-{i}", "color": f"#{i:02x}80{i:02x}"} for i in range(20)]
        folder.mkdir()
        created = utcnow()
        self.rows: list[dict[str, Any]] = []
        for i in range(count):
            path = folder / f"{i:06d}.safetensors"
            data = rng.randbytes(rng.randrange(64, 4096))
            path.write_bytes(data)
            self.rows.append(
                {
                    "path": str(path),
                    "name": path.name,
                    "type": "lora",
                    "size_bytes": len(data),
                    "created_at": created,
                    "meta": {"legacy": {"id": i}},
                    "tags": rng.sample(tag_pool, i % 3),
                }
            )

    def staged(self, url: str, count: int) -> DatabaseManager:
        """A fresh catalog at ``url`` with the first ``count`` files staged."""
        from sqlalchemy import insert

        from modelvault import Settings
        from modelvault.db.models import PendingImport

        db = DatabaseManager(url, settings=Settings(db_url=url))
        db.init_db()
        with db.session_scope() as session:
            session.execute(insert(PendingImport), self.rows[:count])
        return db


# The floors of (c): the bare loop, and the same loop identifying each file as the worker
# must (the header sniffed from the bytes read, what it says written to the model's meta).
FLOOR = "floor"
FLOOR_IDENTIFYING = "floor+identify"


def _rows_per_backend(
    catalogs: ScratchCatalogs, files: TinyFiles, args: argparse.Namespace
) -> None:
    count = args.tiny_files
    floor_loop = _sqlite_floor if catalogs.backend == "sqlite" else _postgres_floor
    runs: dict[str, list[float]] = {
        FLOOR: [],
        FLOOR_IDENTIFYING: [],
        "1 worker": [],
        "2 workers": [],
    }
    for run in range(args.repeat):  # interleaved, so a burst of load hits all alike
        for what in _turns(list(runs), run):
            name = re.sub(r"\W", "", what)
            db = files.staged(catalogs.fresh(f"{name}{run}"), count)
            if what in (FLOOR, FLOOR_IDENTIFYING):
                url = db.engine.url.render_as_string(hide_password=False)
                db.dispose()
                loop = floor_loop(url, identifying=what == FLOOR_IDENTIFYING)
                runs[what].append(_finished_times(loop, count)[-1])
            else:
                runs[what].append(_timed_pool(db, int(what[0]), count))
        catalogs.drop_all()
    floor = statistics.median(runs[FLOOR])
    identifying = statistics.median(runs[FLOOR_IDENTIFYING])
    one = statistics.median(runs["1 worker"])
    print(f"    {catalogs.backend}:")
    for label, seconds in runs.items():
        text = f"      {label + ':':16} {count / statistics.median(seconds):8,.0f} rows/s"
        if label == FLOOR_IDENTIFYING:
            text += f"  {identifying / floor:5.2f}x the floor"
        elif label != FLOOR:
            ratio = statistics.median(seconds) / floor
            text += f"  {ratio:5.2f}x the floor"
            text += f", {statistics.median(seconds) / identifying:5.2f}x {FLOOR_IDENTIFYING}"
            if label == "1 worker":
                text += f" (target <= {WORKER_RATIO_TARGET}: "
                text += f"{'met' if ratio <= WORKER_RATIO_TARGET else 'MISSED'})"
            else:
                pool = statistics.median(seconds) / one
                text += f"; {pool:.2f}x the time of 1 worker (target <= 1: "
                text += f"{'met' if pool <= 1 else 'MISSED'})"
        print(text + f"  [runs: {', '.join(f'{s:.2f}' for s in seconds)} s]")


def _rate_as_catalog_grows(catalogs: ScratchCatalogs, files: TinyFiles, count: int) -> None:
    """Rows/s in the first and the last fifth of one run, floor and 1 worker."""
    from modelvault.migration.worker import WorkerEvent, process_pending

    db = files.staged(catalogs.fresh("growth_floor"), count)
    url = db.engine.url.render_as_string(hide_password=False)
    db.dispose()
    floor_times = _finished_times(_postgres_floor(url), count)
    db = files.staged(catalogs.fresh("growth_worker"), count)
    stamps: list[float] = []

    def on_event(event: WorkerEvent) -> None:
        if event.kind == "finished":
            stamps.append(time.perf_counter())

    start = time.perf_counter()
    report = process_pending(db, workers=1, on_event=on_event)
    db.dispose()
    assert report.imported == count, report
    worker_times = [t - start for t in stamps]
    print(f"    postgresql, rate as the catalog grows from 0 to {count:,} models:")
    for label, times in (("floor", floor_times), ("1 worker", worker_times)):
        fifth = count // 5
        first = fifth / times[fifth - 1]
        last = fifth / (times[-1] - times[-fifth - 1])
        print(
            f"      {label + ':':12} first fifth {first:8,.0f} rows/s, last fifth {last:8,.0f} "
            f"rows/s: last/first {last / first:.2f}"
        )


def _finished_times(loop: Iterator[int], count: int) -> list[float]:
    """Seconds since the start at which each row was done (a loop yields rows per commit)."""
    start = time.perf_counter()
    times: list[float] = []
    for done in loop:
        times.extend([time.perf_counter() - start] * done)
    assert len(times) == count, (len(times), count)
    return times


FLOOR_CLAIM = 32
FLOOR_OWNER = "floor"


def _sqlite_floor(url: str, *, identifying: bool = False) -> Iterator[int]:
    """The bare loop on SQLite; yields the number of rows after each commit.
    ``identifying``: each file identified too (see ``_hash_claimed``)."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON"):
        conn.execute(f"PRAGMA {pragma}")
    tag_ids: dict[str, int] = {}
    try:
        while True:
            lease = _sqlite_time(time.time() + 300)
            conn.execute("BEGIN IMMEDIATE")
            ids = [
                row_id
                for (row_id,) in conn.execute(
                    "SELECT id FROM pending_import WHERE status = 'pending' ORDER BY id LIMIT ?",
                    (FLOOR_CLAIM,),
                )
            ]
            marks = ", ".join("?" * len(ids))
            claimed = conn.execute(
                "UPDATE pending_import SET status = 'claimed', claimed_by = ?, "
                f"lease_expires_at = ? WHERE id IN ({marks}) "
                "RETURNING id, path, name, type, base, created_at, meta, tags",
                (FLOOR_OWNER, lease, *ids),
            ).fetchall()
            conn.execute("COMMIT")
            if not claimed:
                return
            models, links = _hash_claimed(claimed, _sqlite_time(time.time()), identifying)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO models (sha256, path, name, type, base, size_bytes, mtime_ns, "
                "created_at, updated_at, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                models,
            )
            for name, color in _new_tags(links, tag_ids).items():
                conn.execute(
                    "INSERT OR IGNORE INTO tags (name, color, created_at) VALUES (?, ?, ?)",
                    (name, color, _sqlite_time(time.time())),
                )
                (tag_ids[name],) = conn.execute(
                    "SELECT id FROM tags WHERE name = ?", (name,)
                ).fetchone()
            conn.executemany(
                "INSERT INTO model_tags (model_sha256, tag_id) VALUES (?, ?)",
                [(sha, tag_ids[t["name"]]) for sha, t in links],
            )
            conn.executemany("DELETE FROM pending_import WHERE id = ?", [(i,) for i in ids])
            conn.execute("COMMIT")
            yield len(claimed)
    finally:
        conn.close()


def _postgres_floor(url: str, *, identifying: bool = False) -> Iterator[int]:
    """The bare loop on PostgreSQL with psycopg; yields the number of rows after each commit.
    ``identifying``: each file identified too (see ``_hash_claimed``)."""
    import psycopg

    tag_ids: dict[str, int] = {}
    with psycopg.connect(plain_postgres(url)) as conn:
        while True:
            claimed = conn.execute(
                "UPDATE pending_import SET status = 'claimed', claimed_by = %s, "
                "lease_expires_at = now() + interval '5 minutes' WHERE id IN "
                "(SELECT id FROM pending_import WHERE status = 'pending' ORDER BY id "
                "LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING id, path, name, type, base, created_at, meta::text, tags::text",
                (FLOOR_OWNER, FLOOR_CLAIM),
            ).fetchall()
            conn.commit()
            if not claimed:
                return
            models, links = _hash_claimed(claimed, datetime.now(timezone.utc), identifying)
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO models (sha256, path, name, type, base, size_bytes, mtime_ns, "
                    "created_at, updated_at, meta) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json)",
                    models,
                )
                for name, color in _new_tags(links, tag_ids).items():
                    cursor.execute(
                        "INSERT INTO tags (name, color, created_at) VALUES (%s, %s, now()) "
                        "ON CONFLICT (name) DO NOTHING",
                        (name, color),
                    )
                    row = cursor.execute("SELECT id FROM tags WHERE name = %s", (name,)).fetchone()
                    tag_ids[name] = row[0] if row else 0
                cursor.executemany(
                    "INSERT INTO model_tags (model_sha256, tag_id) VALUES (%s, %s)",
                    [(sha, tag_ids[t["name"]]) for sha, t in links],
                )
                cursor.execute(
                    "DELETE FROM pending_import WHERE id = ANY(%s)", ([r[0] for r in claimed],)
                )
            conn.commit()
            yield len(claimed)


def _hash_claimed(
    claimed: list[Any], now: Any, identifying: bool = False
) -> tuple[list[tuple[Any, ...]], list[tuple[str, dict[str, Any]]]]:
    """Hash each claimed file: its model's values and its (sha256, tag) pairs.

    ``identifying``: the header is read from the same bytes (``HeaderTap``, as the
    worker does) and what it says is added to the model's meta."""
    models, links = [], []
    for _, path, name, kind, base, created, meta, tags in claimed:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
            sha = hashlib.sha256(data).hexdigest()
        if identifying:
            tap = HeaderTap()
            tap.begin(len(data))
            tap.take(memoryview(data))
            meta = json.dumps({**json.loads(meta), **tap.found(name)})
        models.append((sha, path, name, kind, base, st.st_size, st.st_mtime_ns, created, now, meta))
        links.extend((sha, tag) for tag in json.loads(tags))
    return models, links


def _new_tags(
    links: list[tuple[str, dict[str, Any]]], tag_ids: dict[str, int]
) -> dict[str, str | None]:
    """Name -> colour of the tags these links use whose ids are not known yet."""
    return {t["name"]: t["color"] for _, t in links if t["name"] not in tag_ids}


def _sqlite_time(seconds: float) -> str:
    """A time as the catalog stores it on SQLite (naive UTC text)."""
    return (
        datetime.fromtimestamp(seconds, timezone.utc)
        .replace(tzinfo=None)
        .isoformat(" ", "microseconds")
    )


# (d) -------------------------------------------------------------------------------------


def bench_peak_rss(tmp: Path, size: int) -> bool:
    path = tmp / "rss.bin"
    _make_file(path, size)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    base_kib, peak_kib = (int(v) for v in out.split())
    path.unlink()
    peak = peak_kib * 1024
    met = peak < RSS_TARGET_BYTES
    print(
        f"(d) peak RSS of a process hashing a {size / GIB:g} GiB file: {peak / 1e6:.1f} MB "
        f"(the interpreter and imports alone: {base_kib * 1024 / 1e6:.1f} MB) "
        f"(target < {RSS_TARGET_BYTES / 1e6:.0f} MB: {'met' if met else 'MISSED'})"
    )
    return met


# helpers ---------------------------------------------------------------------------------


def _make_file(path: Path, size: int) -> None:
    """Random-looking bytes (a repeated 16 MiB random block: SHA-256 cost ignores content)
    after a safetensors header of one tensor, so the header reader and AutoV3 have their
    real work."""
    block = os.urandom(16 * MIB)
    with open(path, "wb") as f:
        left = size - f.write(_safetensors_header(size))
        while left > 0:
            left -= f.write(block[: min(left, len(block))])


def _safetensors_header(size: int) -> bytes:
    """An 8-byte length and the JSON of one U8 tensor filling the rest of ``size`` bytes."""
    length = 128  # the JSON padded to this, a multiple of 8, whatever the tensor's size
    n = size - 8 - length
    text = json.dumps({"t": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    return struct.pack("<Q", length) + text.ljust(length)


def _warm(path: Path) -> None:
    buffer = bytearray(MIB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass


def _quiet(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def _load() -> str:
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _rate(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 1e6:7.1f} MB/s"


if __name__ == "__main__":
    sys.exit(main())
