"""Benchmark of the legacy import (stage 1) against a floor measured in the same run.

    python bench/import_bench.py                 # 200,000 rows
    python bench/import_bench.py --rows 1000000  # the memory target's size
    python bench/import_bench.py --links-stress  # peak RSS: 10M links; 1M tags

Builds a layout-2 legacy catalog of N rows (half hashed, 3 tags each, the user's
notes in extra_json, as the legacy app writes them), then, each in a child
process of its own so that its peak RSS is its own:

- floor: a plain ``sqlite3`` script that reads the same legacy file and writes
  the same v3 rows (models, pending_import, tags, model_tags, with the same meta
  JSON and timestamps) with ``executemany``, in transactions of the same batch
  size, into a catalog created the same way (``init_db``) with the same pragmas;
  it checks nothing and is not robust to a single quirk: it is what the work
  costs at the least.
- import: ``import_legacy_data`` into a fresh SQLite catalog.

Printed: rows/s, peak RSS (VmHWM) and its growth over the child's baseline
(interpreter and imports, catalog created), and the ratio import time / floor
time. Targets: ratio <= 1.5; peak RSS < 200 MB at N = 1,000,000. The figures are
the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from modelvault.migration.sample import (  # noqa: E402
    SYSTEM_TAG_NAMES,
    LegacyModel,
    LegacyTag,
    system_tags,
    write_legacy_catalog,
)

RATIO_TARGET = 1.5
RSS_TARGET_BYTES = 200 * 10**6
TYPES = ("checkpoint", "lora", "embedding", "vae")
USER_TAGS = 40
BATCH = 2000

# Both children print one JSON line: seconds, baseline and peak RSS in KiB.
CHILD_PRELUDE = """
import json, sys, time
sys.path.insert(0, {root!r})
def peak_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
legacy, catalog, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
"""

IMPORT_CHILD = """
from modelvault import DatabaseManager, Settings
from modelvault.migration.importer import import_legacy_data
settings = Settings(db_url="sqlite:///" + catalog, import_batch_size=batch)
db = DatabaseManager(catalog, settings=settings)
db.init_db()
base = peak_kib()
started, cpu = time.perf_counter(), time.process_time()
report = import_legacy_data(legacy, db)
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
assert report.rows_read == report.accounted, report
print(json.dumps({"seconds": seconds, "cpu": cpu, "base_kib": base, "peak_kib": peak_kib(),
                  "report": {k: v for k, v in report.to_dict().items() if k != "warnings"}}))
"""

FLOOR_CHILD = """
import sqlite3
from datetime import datetime, timedelta, timezone
from modelvault import DatabaseManager
DatabaseManager(catalog).init_db()
base = peak_kib()
started, cpu = time.perf_counter(), time.process_time()
epoch = datetime(1970, 1, 1)
def stamp(ms):
    return (epoch + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S.%f")
src = sqlite3.connect("file:" + legacy + "?mode=ro", uri=True)
out = sqlite3.connect(catalog, isolation_level=None)
out.execute("PRAGMA foreign_keys = ON")
out.execute("PRAGMA synchronous = NORMAL")
now = datetime.now(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
tags = {}
out.execute("BEGIN")
for tag_id, name, color, created in src.execute("SELECT id, name, color, created_at FROM tags"):
    cur = out.execute("INSERT INTO tags (name, color, created_at) VALUES (?, ?, ?)",
                      (name, color, stamp(created) if created is not None else now))
    tags[tag_id] = (cur.lastrowid, name, color)
out.execute("COMMIT")
links = src.cursor().execute("SELECT model_id, tag_id FROM model_tags ORDER BY model_id")
pending_link = next(links, None)
rows = src.execute("SELECT id, path, name, type, size_bytes, hash_hex, created_at, extra_json "
                   "FROM models ORDER BY id")
while True:
    chunk = rows.fetchmany(batch)
    if not chunk:
        break
    models, staged, model_links = [], [], []
    for mid, path, name, kind, size, sha, created, extra in chunk:
        own = []
        while pending_link is not None and pending_link[0] <= mid:
            if pending_link[0] == mid:
                own.append(tags[pending_link[1]])
            pending_link = next(links, None)
        meta = json.loads(extra) if extra else {}
        meta["legacy"] = {"source": legacy, "id": mid, "created_at_ms": created}
        if sha:
            models.append((sha, path, name, kind, size, stamp(created), now, json.dumps(meta)))
            model_links.extend((sha, t[0]) for t in own)
        else:
            staged.append((path, name, kind, size, stamp(created), json.dumps(meta),
                           json.dumps([{"name": t[1], "color": t[2]} for t in own]), mid, legacy))
    out.execute("BEGIN")
    out.executemany("INSERT INTO models (sha256, path, name, type, size_bytes, created_at, "
                    "updated_at, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", models)
    out.executemany("INSERT INTO model_tags (model_sha256, tag_id) VALUES (?, ?)", model_links)
    out.executemany("INSERT INTO pending_import (path, name, type, size_bytes, created_at, meta, "
                    "tags, legacy_id, source, status, attempts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0)", staged)
    out.execute("COMMIT")
out.close()
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu": cpu, "base_kib": base, "peak_kib": peak_kib()}))
"""


def legacy_rows(n: int) -> Iterator[LegacyModel]:
    for i in range(1, n + 1):
        kind = TYPES[i % len(TYPES)]
        name = f"model_{i:07d}.safetensors"
        extra = {
            "description": f"notes on model {i}",
            "prompts": {"positive": "a photo of a cat, best quality", "negative": "blurry"},
            "images": [f"/media/model_{i}_1724000000_preview.png"],
        }
        yield LegacyModel(
            id=i,
            path=f"/bench/ComfyUI/models/{kind}/{name}",
            type=kind,
            name=name,
            size_bytes=2_000_000_000 + i,
            hash_hex=hashlib.sha256(str(i).encode()).hexdigest() if i % 2 else "",
            created_at=1_724_000_000_000 + i,
            extra_json=json.dumps(extra),
        )


def legacy_links(n: int) -> Iterator[tuple[int, int]]:
    first_user_tag = len(SYSTEM_TAG_NAMES) + 1
    for i in range(1, n + 1):
        yield (i, SYSTEM_TAG_NAMES.index(TYPES[i % len(TYPES)]) + 1)
        a, b = i % USER_TAGS, (i * 7 + 3) % USER_TAGS
        if b == a:
            b = (a + 1) % USER_TAGS
        yield from sorted([(i, first_user_tag + a), (i, first_user_tag + b)])


def build_legacy(path: Path, n: int) -> None:
    palette = ["#ff8800", "#0af", "RED", "teal", "#123456"]
    tags = system_tags() + [
        LegacyTag(len(SYSTEM_TAG_NAMES) + 1 + k, f"tag-{k:02d}", palette[k % len(palette)])
        for k in range(USER_TAGS)
    ]
    write_legacy_catalog(path, rows=legacy_rows(n), tags=tags, links=legacy_links(n))


@dataclass(frozen=True)
class Run:
    """What a child process measured: wall and CPU seconds, peak RSS before and after."""

    seconds: float
    cpu: float
    base_kib: int
    peak_kib: int
    report: dict[str, Any] | None = None


def run_child(code: str, legacy: Path, catalog: Path, batch: int) -> Run:
    script = CHILD_PRELUDE.format(root=str(ROOT)) + code
    out = subprocess.run(
        [sys.executable, "-c", script, str(legacy), str(catalog), str(batch)],
        check=True,
        capture_output=True,
        text=True,
    )
    return Run(**json.loads(out.stdout.strip().splitlines()[-1]))


def fresh(folder: Path, name: str) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{folder / name}{suffix}").unlink(missing_ok=True)
    return folder / name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        legacy = folder / "hikaze_mm.sqlite3"
        started = time.perf_counter()
        build_legacy(legacy, args.rows)
        print(
            f"legacy file: {args.rows:,} rows, {legacy.stat().st_size / 1e6:.0f} MB, "
            f"built in {time.perf_counter() - started:.1f} s"
        )
        floors, imports = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            floor_db, import_db = fresh(folder, "floor.sqlite3"), fresh(folder, "cat.sqlite3")
            floors.append(run_child(FLOOR_CHILD, legacy, floor_db, args.batch))
            imports.append(run_child(IMPORT_CHILD, legacy, import_db, args.batch))
    floor = min(floors, key=lambda run: run.seconds)
    result = min(imports, key=lambda run: run.seconds)
    return report(args.rows, floor, result)


def report(n: int, floor: Run, result: Run) -> int:
    peak = result.peak_kib * 1024
    growth = (result.peak_kib - result.base_kib) * 1024
    ratio = result.seconds / floor.seconds
    for label, run in (
        ("floor  (plain sqlite3 executemany)", floor),
        ("import (import_legacy_data)", result),
    ):
        print(
            f"{label:35} {run.seconds:7.2f} s (cpu {run.cpu:6.2f} s) {n / run.seconds:9,.0f} rows/s"
            f"  peak RSS {run.peak_kib / 1024:6.1f} MiB"
            f" (+{(run.peak_kib - run.base_kib) / 1024:.1f} MiB over its baseline)"
        )
    print(f"report: {json.dumps(result.report)}")
    ok_ratio = ratio <= RATIO_TARGET
    ok_rss = peak < RSS_TARGET_BYTES
    print(
        f"ratio import/floor: {ratio:.2f} (target <= {RATIO_TARGET}) "
        f"{'ok' if ok_ratio else 'MISSED'}; cpu time ratio {result.cpu / floor.cpu:.2f}"
    )
    print(
        f"peak RSS of the import: {peak / 1e6:.0f} MB, {growth / 1e6:.0f} MB of it during the "
        f"import (target < {RSS_TARGET_BYTES / 1e6:.0f} MB at 1,000,000 rows) "
        f"{'ok' if ok_rss else 'MISSED'}"
    )
    return 0 if ok_ratio and ok_rss else 1


# -- links stress: memory with many tags and links (optional mode) -------------------------

STRESS_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from modelvault import DatabaseManager, Settings
from modelvault.migration.importer import import_legacy_data
def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
legacy, catalog = sys.argv[1], sys.argv[2]
db = DatabaseManager(catalog, settings=Settings(db_url="sqlite:///" + catalog))
db.init_db()
base = peak_kib()
started = time.perf_counter()
report = import_legacy_data(legacy, db)
assert report.rows_read == report.accounted, report
print(json.dumps({{"seconds": time.perf_counter() - started, "base_kib": base,
                   "peak_kib": peak_kib(), "imported": report.imported,
                   "tags_created": report.tags_created}}))
"""


def stress_catalog(path: Path, models: int, tags: int, links_per_model: int) -> int:
    """A legacy file of ``models`` hashed rows (files gone) and ``tags`` user tags,
    each model linked to ``links_per_model`` of them; returns the number of links."""
    first = len(SYSTEM_TAG_NAMES) + 1

    def rows() -> Iterator[LegacyModel]:
        for i in range(1, models + 1):
            sha = hashlib.sha256(f"stress {i}".encode()).hexdigest()
            yield LegacyModel(i, f"/stress/models/loras/m{i}.safetensors", "loras", hash_hex=sha)

    def links() -> Iterator[tuple[int, int]]:
        for i in range(1, models + 1):
            start = (i * 7919) % tags
            for k in range(links_per_model):
                yield (i, first + (start + k) % tags)

    user_tags = (LegacyTag(first + k, f"stress tag {k:07d}", "#336699") for k in range(tags))
    write_legacy_catalog(path, rows=rows(), tags=[*system_tags(), *user_tags], links=links())
    return models * links_per_model


def links_stress(folder: Path, scale: float) -> bool:
    """Peak RSS of the import for 1,000 models x 10,000 tags (10M links) and for
    1M tags (``scale`` shrinks both for a quick look); True if both stay under
    ``RSS_TARGET_BYTES``."""
    cases = [
        ("1,000 models x 10,000 tags", int(1000 * scale), 10_000, 10_000),
        ("1,000,000 tags", 1000, int(1_000_000 * scale), 3),
    ]
    ok = True
    for label, models, tags, per_model in cases:
        legacy, catalog = (
            fresh(folder, f"stress-{tags}.sqlite3"),
            fresh(folder, "stress-cat.sqlite3"),
        )
        started = time.perf_counter()
        links = stress_catalog(legacy, models, tags, min(per_model, tags))
        built = time.perf_counter() - started
        script = STRESS_CHILD.format(root=str(ROOT))
        out = subprocess.run(
            [sys.executable, "-c", script, str(legacy), str(catalog)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        run = json.loads(out.stdout.strip().splitlines()[-1])
        peak = run["peak_kib"] * 1024
        verdict = "ok" if peak < RSS_TARGET_BYTES else "MISSED"
        ok = ok and peak < RSS_TARGET_BYTES
        print(
            f"{label} ({models:,} models, {tags:,} tags, {links:,} links; built in {built:.0f} s):"
            f" import {run['seconds']:.1f} s, peak RSS {peak / 1e6:.0f} MB"
            f" (+{(run['peak_kib'] - run['base_kib']) * 1024 / 1e6:.0f} MB over its baseline),"
            f" target < {RSS_TARGET_BYTES / 1e6:.0f} MB {verdict}"
        )
        legacy.unlink()
        catalog.unlink()
    return ok


def links_stress_main() -> int:
    parser = argparse.ArgumentParser(description="peak RSS with many tags and links")
    parser.add_argument("--links-stress", action="store_true", required=True)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the cases (0.1: 10x)")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        return 0 if links_stress(Path(tmp), args.scale) else 1


if __name__ == "__main__":
    sys.exit(links_stress_main() if "--links-stress" in sys.argv else main())
