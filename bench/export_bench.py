"""Peak memory of ``export`` (JSON Lines) as the catalog grows: it must stay flat.

For each size (default 100,000 and 1,000,000 models, each with two tags and a
note), a catalog is filled with plain ``executemany`` (SQLite; PostgreSQL with
``--postgres URL`` or ``MODELVAULT_TEST_POSTGRES_URL``), then a fresh process
opens it, measures its own resident memory (the floor: Python, SQLAlchemy and
the open catalog), exports it, and reports its peak resident memory
(``ru_maxrss``) above that floor. A streamed export holds one page of rows at a
time: the figure over the floor is about the same at 1M as at 100k.

    python bench/export_bench.py [--sizes 100000,1000000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_db import ScratchCatalogs

from modelvault import DatabaseManager
from modelvault.db.models import Model, Tag, model_tags

BATCH = 20_000


def fill(url: str, models: int) -> None:
    db = DatabaseManager(url)
    db.init_db()
    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with db.engine.begin() as conn:
        conn.execute(
            Tag.__table__.insert(), [{"name": f"tag{n}", "created_at": now} for n in range(50)]
        )
        ids = [row[0] for row in conn.execute(Tag.__table__.select().with_only_columns(Tag.id))]
    for start in range(0, models, BATCH):
        rows, links = [], []
        for n in range(start, min(start + BATCH, models)):
            sha = hashlib.sha256(str(n).encode()).hexdigest()
            rows.append(
                {
                    "sha256": sha,
                    "path": f"/models/loras/model_{n:07d}.safetensors",
                    "name": f"model {n}",
                    "type": "lora",
                    "size_bytes": 100_000_000 + n,
                    "mtime_ns": 1_700_000_000_000_000_000 + n,
                    "created_at": now,
                    "updated_at": now,
                    "meta": {"description": f"a note for model {n}", "prompts": ["a", "b"]},
                }
            )
            links += [
                {"model_sha256": sha, "tag_id": ids[n % 50]},
                {"model_sha256": sha, "tag_id": ids[(n + 7) % 50]},
            ]
        with db.engine.begin() as conn:
            conn.execute(Model.__table__.insert(), rows)
            conn.execute(model_tags.insert(), links)
    db.dispose()


def rss_kib() -> int:
    """This process's resident memory now (Linux /proc; else the peak so far)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(url: str, target: str) -> None:
    """In a fresh process: the floor, then the export, then the peak."""
    from modelvault.exchange import export_catalog

    db = DatabaseManager(url, read_only=True)
    db.init_db()
    db.catalog_counts()  # the catalog open and read once: part of the floor
    floor = rss_kib()
    started = time.perf_counter()
    report = export_catalog(db, target, layout="lines")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "floor_kib": floor,
                "peak_kib": peak,
                "models": report.models,
                "seconds": seconds,
                "bytes": report.bytes_written,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--postgres", default=os.environ.get("MODELVAULT_TEST_POSTGRES_URL"))
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--measure", nargs=2, metavar=("URL", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="mv-export-bench-") as folder:
        scratch = ScratchCatalogs(args.backend, Path(folder), args.postgres)
        try:
            results = []
            for size in sizes:
                url = scratch.fresh(f"export{size}")
                fill(url, size)
                target = str(Path(folder) / f"export{size}.jsonl")
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", url, target],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(out.stdout)
                os.unlink(target)
                over = result["peak_kib"] - result["floor_kib"]
                results.append(over)
                floor, peak = result["floor_kib"] / 1024, result["peak_kib"] / 1024
                print(
                    f"{args.backend} {size:>9,} models: floor {floor:6.1f} MiB, "
                    f"peak {peak:6.1f} MiB, over the floor {over / 1024:5.1f} MiB; "
                    f"{result['seconds']:.1f} s, {result['bytes'] / 2**20:.0f} MiB written "
                    f"({size / result['seconds']:,.0f} models/s)"
                )
            if len(results) > 1:
                ratio = results[-1] / max(results[0], 1)
                print(
                    f"memory over the floor, largest / smallest catalog: {ratio:.2f}x "
                    f"for {sizes[-1] / sizes[0]:.0f}x the models"
                )
        finally:
            scratch.drop_all()


if __name__ == "__main__":
    main()
