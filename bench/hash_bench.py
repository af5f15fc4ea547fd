"""Benchmark of modelvault's hashing, each figure printed against a floor measured in the same run.

    python bench/hash_bench.py                  # full sizes: 2 GiB and 4 GiB files
    python bench/hash_bench.py --cache-gib 0.5 --rss-gib 1 --repeat 2   # quicker

(a) ``hash_file`` on a file already in the page cache, against the SHA-256
    compute limit of this CPU (``openssl speed -evp sha256 -bytes 65536``);
    target: ratio >= 0.85. A plain readinto+update loop and ``openssl dgst`` are
    printed as context.
(b) the worker pool, and (c) rows/s through the worker: ``bench_pool`` and
    ``bench_worker_rows``, to be written once ``modelvault.migration.worker`` exists.
(d) peak RSS of a child process hashing a big file; target < 100 MB.

The big files are created in a temporary folder (``--dir`` to choose where) and
deleted afterwards. On a busy machine run it a few times: the figures are the
best of ``--repeat`` runs, with the median alongside.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from modelvault.database import DatabaseManager  # noqa: E402
from modelvault.hashing import DEFAULT_CHUNK_SIZE, hash_file  # noqa: E402

GIB = 1024**3
MIB = 1024**2
RATIO_TARGET = 0.85
RSS_TARGET_BYTES = 100 * 10**6

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

    def run(fn: Callable[[], object]) -> list[float]:
        rates = []
        for _ in range(args.repeat):
            _warm(path)  # again each time: the kernel may have evicted part of it meanwhile
            start = time.perf_counter()
            fn()
            rates.append(size / (time.perf_counter() - start))
        return rates

    ok = True
    lines = [("hash_file", run(lambda: hash_file(path, chunk_size=chunk)))]
    lines.append(("context: plain readinto+update loop", run(lambda: _plain_hash(path, chunk))))
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


# (b), (c): to be filled in -----------------------------------------------------------------


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
    """(c) rows/s through the worker on 20,000 tiny files, where the catalog is the cost.

    The floor is a plain loop with ``hashlib`` and ``sqlite3`` doing the same
    writes into a catalog created and staged the same way (same pragmas: WAL,
    synchronous NORMAL, foreign keys): for each row, read and hash the file,
    then in one transaction insert the model, get-or-create its tags (ids
    cached), link them and delete the staging row. It takes no lease, checks
    nothing and cannot run twice at once: it is what the work costs at the least.
    The worker is ``process_pending`` with the default settings (workers =
    min(4, CPUs), batches of 8). Target: floor rows/s / worker rows/s <= 3.
    """
    if _worker_module() is None:
        print(
            "(c) rows/s through the worker: not yet available "
            "(modelvault.migration.worker cannot be imported)"
        )
        return
    import json
    import random
    import sqlite3

    from sqlalchemy import insert

    from modelvault import DatabaseManager, Settings
    from modelvault.db.models import PendingImport
    from modelvault.db.types import utcnow

    count, target = 20_000, 3.0
    rng = random.Random(20_000)
    tag_pool = [{"name": f"tag-{i}", "color": f"#{i:02x}80{i:02x}"} for i in range(20)]

    with tempfile.TemporaryDirectory(prefix="modelvault-bench-rows-", dir=args.dir) as tmp:
        folder = Path(tmp)
        (folder / "files").mkdir()
        created = utcnow()
        rows = []
        for i in range(count):
            path = folder / "files" / f"{i:05d}.safetensors"
            data = rng.randbytes(rng.randrange(64, 4096))
            path.write_bytes(data)
            rows.append(
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

        def staged(name: str) -> tuple[DatabaseManager, Path]:
            path = folder / name
            url = f"sqlite:///{path}"
            db = DatabaseManager(url, settings=Settings(db_url=url))
            db.init_db()
            with db.session_scope() as session:
                session.execute(insert(PendingImport), rows)
            return db, path

        def floor_seconds(run: int) -> float:
            db, path = staged(f"floor-{run}.sqlite3")
            db.dispose()
            conn = sqlite3.connect(path, isolation_level=None)
            for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON"):
                conn.execute(f"PRAGMA {pragma}")
            start = time.perf_counter()
            todo = conn.execute(
                "SELECT id, path, name, type, base, created_at, meta, tags FROM pending_import "
                "WHERE status = 'pending' ORDER BY id"
            ).fetchall()
            tag_ids: dict[str, int] = {}
            for row_id, file, name, kind, base, made, meta, tags in todo:
                with open(file, "rb") as f:
                    st = os.fstat(f.fileno())
                    sha = hashlib.sha256(f.read()).hexdigest()
                now = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO models (sha256, path, name, type, base, size_bytes, mtime_ns, "
                    "created_at, updated_at, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sha, file, name, kind, base, st.st_size, st.st_mtime_ns, made, now, meta),
                )
                for tag in json.loads(tags):
                    tag_id = tag_ids.get(tag["name"])
                    if tag_id is None:
                        conn.execute(
                            "INSERT OR IGNORE INTO tags (name, color, created_at) VALUES (?, ?, ?)",
                            (tag["name"], tag["color"], now),
                        )
                        (tag_id,) = conn.execute(
                            "SELECT id FROM tags WHERE name = ?", (tag["name"],)
                        ).fetchone()
                        tag_ids[tag["name"]] = tag_id
                    conn.execute(
                        "INSERT OR IGNORE INTO model_tags (model_sha256, tag_id) VALUES (?, ?)",
                        (sha, tag_id),
                    )
                conn.execute("DELETE FROM pending_import WHERE id = ?", (row_id,))
                conn.execute("COMMIT")
            seconds = time.perf_counter() - start
            (done,) = conn.execute("SELECT count(*) FROM models").fetchone()
            conn.close()
            assert done == count, done
            return seconds

        def worker_seconds(run: int, workers: int | None) -> float:
            db, _ = staged(f"worker-{run}-{workers}.sqlite3")
            return _timed_pool(db, workers, count)

        print(
            f"(c) rows/s through the worker, {count} tiny files, best of {args.repeat} "
            f"(load average before: {_load()}):"
        )
        floors, workers_default, workers_one = [], [], []
        for run in range(args.repeat):  # interleaved, so a burst of load hits both alike
            floors.append(floor_seconds(run))
            workers_default.append(worker_seconds(run, None))
            workers_one.append(worker_seconds(run, 1))
        floor = min(floors)
        print(f"    {'floor: hashlib + sqlite3 loop, same writes:':48} {count / floor:8.0f} rows/s")
        for label, runs in (
            (f"process_pending, default workers ({Settings().workers}):", workers_default),
            ("process_pending, 1 worker:", workers_one),
        ):
            best = min(runs)
            ratio = best / floor
            text = f"    {label:48} {count / best:8.0f} rows/s  ratio {ratio:.2f}"
            if runs is workers_default:
                text += f" (target <= {target}: {'met' if ratio <= target else 'MISSED'})"
            print(text)
        print(f"    (load average after: {_load()})")


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
    """Random-looking bytes (a repeated 16 MiB random block: SHA-256 cost ignores content)."""
    block = os.urandom(16 * MIB)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            left -= f.write(block[: min(left, len(block))])


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
