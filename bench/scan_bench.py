"""Benchmark of a re-scan of unchanged model folders against a floor measured in the same run.

    python bench/scan_bench.py                        # trees of 5,000, 10,000 and 20,000 files
    python bench/scan_bench.py --sizes 20000,80000    # how memory grows with the tree

For each size, builds a tree of one-byte ``.safetensors`` files (200 per folder,
in folders two levels deep) and a SQLite catalog that holds every one of them
with its current size and mtime (as after a first scan and hash). Then, each in
a child process of its own so that its peak RSS is its own:

- floor: ``os.walk`` of the tree and an ``os.stat`` of every file, nothing else:
  what looking at the tree costs at the least;
- rescan: ``scan_roots`` on the same tree (which finds everything unchanged and
  reads no file);
- upgrade: once, the first re-scan of a catalog as an earlier version left it
  (size and mtime, no ``meta.file_stat``): it reads no file either, and records
  every file's change time and inode.

Printed per size: the times (floor and rescan best of ``--repeat``), the ratio
rescan / floor (target <= 3), the upgrade's ratio to the floor, and the
rescan's peak RSS (VmHWM) over its baseline after imports. Flat memory: that
growth should not grow with the tree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from modelvault.database import DatabaseManager  # noqa: E402
from modelvault.db.models import Model  # noqa: E402
from modelvault.db.types import utcnow  # noqa: E402
from modelvault.file_stamp import FILE_STAT, stamp_of, stat_marks  # noqa: E402

RATIO_TARGET = 3.0
PER_FOLDER = 200

PRELUDE = f"""
import json, os, sys, time
sys.path.insert(0, {str(ROOT)!r})
def kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0
"""

FLOOR = (
    PRELUDE
    + """
base = kib("VmRSS")
start = time.perf_counter()
count = 0
for folder, _dirs, files in os.walk(sys.argv[1]):
    for name in files:
        os.stat(os.path.join(folder, name))
        count += 1
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "files": count, "base_kib": base, "peak_kib": kib("VmHWM")}))
"""
)

RESCAN = (
    PRELUDE
    + """
from modelvault.database import DatabaseManager
from modelvault.scan import scan_roots
db = DatabaseManager(sys.argv[2])
db.init_db()
base = kib("VmRSS")
start = time.perf_counter()
report = scan_roots(db, [sys.argv[1]])
seconds = time.perf_counter() - start
assert report.unchanged == report.files_seen and report.staged == 0, report
print(json.dumps({"seconds": seconds, "files": report.files_seen, "base_kib": base,
                  "peak_kib": kib("VmHWM")}))
"""
)


def build(folder: Path, count: int) -> tuple[Path, Path, Path]:
    """A tree of ``count`` model files, a catalog that knows all of them, and one that
    knows them as an earlier version did (without ``meta.file_stat``)."""
    tree = folder / "models"
    paths = make_tree(tree, count)
    catalogs = folder / "catalog.sqlite3", folder / "older.sqlite3"
    for catalog, stamped in zip(catalogs, (True, False), strict=True):
        db = DatabaseManager(catalog)
        db.init_db()
        catalogue_as_found(db, paths, stamped=stamped)
        db.dispose()
    return tree, *catalogs


def make_tree(tree: Path, count: int) -> list[Path]:
    """``count`` one-byte model files (an empty file is no model: the scan skips it),
    ``PER_FOLDER`` a folder, two levels deep."""
    paths = []
    for i in range(count):
        sub = tree / f"type_{i // (PER_FOLDER * 10):02d}" / f"set_{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            sub.mkdir(parents=True)
        path = sub / f"model_{i:07d}.safetensors"
        path.write_bytes(b"x")
        paths.append(path)
    return paths


def catalogue_as_found(db: DatabaseManager, paths: list[Path], *, stamped: bool = True) -> None:
    """Models for these files with their current stamp, as a scan and hash leave them
    (the sha256 is a stand-in made from the path: nothing reads it); with ``stamped``
    False, size and mtime only, as an earlier version left them."""
    stamp = utcnow()
    rows = []
    for path in paths:
        st = path.stat()
        meta = {FILE_STAT: stat_marks(stamp_of(st))} if stamped else {}
        rows.append(
            {
                "sha256": hashlib.sha256(str(path).encode()).hexdigest(),
                "path": str(path),
                "name": path.name,
                "type": "other",
                "size_bytes": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "meta": meta,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    with db.session_scope(immediate=True) as session:
        session.execute(Model.__table__.insert(), rows)


def run(script: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def best(script: str, repeat: int, *args: str) -> dict[str, float]:
    runs = [run(script, *args) for _ in range(repeat)]
    return min(runs, key=lambda r: r["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="5000,10000,20000", help="tree sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best counts)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    worst = 0.0
    print(
        f"{'files':>8} {'floor s':>9} {'rescan s':>9} {'ratio':>6} {'upgrade s':>10} "
        f"{'ratio':>6} {'rescan RSS growth':>18}"
    )
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="scan-bench-") as tmp:
            tree, catalog, older = build(Path(tmp), size)
            run(FLOOR, str(tree))  # warm the folder cache for both sides alike
            floor = best(FLOOR, args.repeat, str(tree))
            rescan = best(RESCAN, args.repeat, str(tree), str(catalog))
            upgrade = run(RESCAN, str(tree), str(older))  # once: it records the stamps
        assert floor["files"] == rescan["files"] == upgrade["files"] == size
        ratio = rescan["seconds"] / floor["seconds"]
        worst = max(worst, ratio)
        growth = (rescan["peak_kib"] - rescan["base_kib"]) / 1024
        print(
            f"{size:>8} {floor['seconds']:>9.3f} {rescan['seconds']:>9.3f} {ratio:>6.2f} "
            f"{upgrade['seconds']:>10.3f} {upgrade['seconds'] / floor['seconds']:>6.2f} "
            f"{growth:>15.1f} MB"
        )
    verdict = "ok" if worst <= RATIO_TARGET else "SLOWER THAN TARGET"
    print(f"worst ratio {worst:.2f} (target <= {RATIO_TARGET:g}): {verdict}")
    return 0 if worst <= RATIO_TARGET else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
