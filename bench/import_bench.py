"""Benchmark of the legacy import (stage 1) against the bare floor, measured in the same run.

    python bench/import_bench.py                          # 100,000 rows, SQLite (+ PostgreSQL)
    python bench/import_bench.py --full --repeat 3        # 100,000 and 1,000,000 rows
    python bench/import_bench.py --rows 20000 --repeat 1  # a quick look
    python bench/import_bench.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    python bench/import_bench.py --links-stress           # peak RSS: 10M links; 1M tags

The data: a layout-2 legacy catalog of N rows as the legacy app writes them
(half hashed, half with ``hash_hex = ''``; 3 tags each: its type's system tag
and two of 40 user tags with colours in five spellings; the user's notes in
``extra_json``; none of the files exist).

The floor is the least work that writes the same rows, with no check at all:

1. tags: the 47 legacy tags are read and inserted with their names and colours
   normalised (``normalize_tag_name``, ``parse_color``: 47 calls, nothing per row);
2. for each batch of ``--batch`` rows (default: the import's own default,
   ``Settings().import_batch_size``; both use the same):
   read the legacy models by id range and their links (the same two queries
   as the importer); for each row ``json.loads`` its ``extra_json``, add the
   ``legacy`` block (source, id, created_at_ms), ``json.dumps`` it, format
   ``created_at`` as the catalog stores it; a row with a hash becomes a
   ``models`` row plus one ``model_tags`` row per tag, a row without one a
   ``pending_import`` row with its tags as JSON;
3. SQLite: one ``executemany`` per table and one ``COMMIT`` per batch on a
   plain ``sqlite3`` connection (the catalog made by ``init_db``, the same
   pragmas: WAL, synchronous NORMAL, foreign keys on).
   PostgreSQL: one psycopg ``COPY ... FROM STDIN`` per table and one commit
   per batch into a catalog made by ``init_db``.

The floor does not look the paths and hashes up in the catalog, does not
``stat`` the files, does not validate a single value: it is only right for this
data set, which is why it is the floor. Each run writes a fresh catalog; after
the first run of each size the two catalogs are compared row by row (every
column but ``updated_at`` and the staging ``id``), so the floor provably writes
the same rows as the import.

Each measurement runs in a child process of its own, so its peak RSS (VmHWM from
/proc, the interpreter and imports included) is its own. Floor and import runs
are interleaved (each goes first in turn) and the figures are medians of
``--repeat`` runs. Printed per size and backend: seconds (wall and CPU), rows/s,
microseconds per row, bytes written to storage (SQLite; from /proc/self/io, a
figure the machine's load does not change), peak RSS, and the ratio import /
floor; with two sizes, the linear-growth figure (microseconds per row at the
largest size / at the smallest).

Targets: ratio <= 1.2 at 100,000 rows and <= 1.1 at 1,000,000 on
SQLite, <= 1.3 on PostgreSQL; cost per row at 1M within 1.2x of the cost at
100k; peak RSS < 200 MB. Exit code 0 when every target measured was met.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
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

from scratch_db import ScratchCatalogs, plain_postgres  # noqa: E402

from modelvault import Settings  # noqa: E402
from modelvault.migration.sample import (  # noqa: E402
    SYSTEM_TAG_NAMES,
    LegacyModel,
    LegacyTag,
    system_tags,
    write_legacy_catalog,
)

RATIO_TARGETS = {("sqlite", 100_000): 1.2, ("sqlite", 1_000_000): 1.1, ("postgresql", None): 1.3}
GROWTH_TARGET = 1.2
RSS_TARGET_KIB = 200 * 10**6 // 1024
TYPES = ("checkpoint", "lora", "embedding", "vae")
USER_TAGS = 40
BATCH = Settings().import_batch_size  # the library's default, for the import and the floor

# -- the children: each prints one JSON line (seconds, cpu, baseline and peak RSS in KiB) --

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
legacy, url, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
from modelvault import DatabaseManager, Settings
def written():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("write_bytes:"))
def measured(work):
    base, wrote = peak_kib(), written()
    started, cpu = time.perf_counter(), time.process_time()
    extra = work()
    print(json.dumps({{"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                      "base_kib": base, "peak_kib": peak_kib(), "written": written() - wrote,
                      **(extra or {{}})}}))
"""

IMPORT_CHILD = """
from modelvault.migration.importer import import_legacy_data
db = DatabaseManager(url, settings=Settings(db_url=url, import_batch_size=batch))
db.init_db()
def work():
    report = import_legacy_data(legacy, db)
    db.dispose()  # closed, as the floor closes its connection (SQLite checkpoints then)
    assert report.rows_read == report.accounted, report
    return {"report": {k: v for k, v in report.to_dict().items()
                       if k in ("rows_read", "imported", "staged", "tags_created")}}
measured(work)
"""

# Shared by both floors: the legacy reads and the per-row work, producing each batch's
# models, links and staging rows as tuples of driver values (text timestamps, JSON text).
FLOOR_PRELUDE = """
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from modelvault.normalize import normalize_tag_name, parse_color
DatabaseManager(url).init_db()
EPOCH = datetime(1970, 1, 1)
SUFFIX = "+00:00" if url.startswith("postgresql") else ""
def stamp(ms):
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(" ", "microseconds") + SUFFIX
source = str(Path(legacy).resolve())
src = sqlite3.connect("file:" + legacy + "?mode=ro", uri=True)
now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds") + SUFFIX
def legacy_tags():
    return [(tag_id, normalize_tag_name(name), parse_color(color),
             now if created is None else stamp(created))
            for tag_id, name, color, created in src.execute(
                "SELECT id, name, color, created_at FROM tags ORDER BY id")]
def batches(tag_ids):
    specs = {legacy_id: (tag_ids[name], json.dumps({"name": name, "color": color}))
             for legacy_id, name, color, _ in legacy_tags()}
    last = -(2**63)
    while True:
        rows = src.execute("SELECT id, path, name, type, size_bytes, hash_hex, created_at, "
                           "extra_json FROM models WHERE id > ? ORDER BY id LIMIT ?",
                           (last, batch)).fetchall()
        if not rows:
            return
        top = rows[-1][0]
        own = {}
        for model_id, tag_id in src.execute(
                "SELECT model_id, tag_id FROM model_tags WHERE model_id > ? AND model_id <= ? "
                "ORDER BY model_id, tag_id", (last, top)):
            own.setdefault(model_id, []).append(specs[tag_id])
        last = top
        models, links, staged = [], [], []
        for mid, path, name, kind, size, sha, created, extra in rows:
            meta = json.loads(extra)
            meta["legacy"] = {"source": source, "id": mid, "created_at_ms": created}
            tags = own.get(mid, ())
            if sha:
                models.append((sha, path, name, kind, size, stamp(created), now, json.dumps(meta)))
                links.extend((sha, tag_id) for tag_id, _ in tags)
            else:
                staged.append((path, name, kind, size, stamp(created), json.dumps(meta),
                               "[" + ", ".join(text for _, text in tags) + "]", mid, source,
                               "pending", 0))
        yield models, links, staged
MODEL_COLUMNS = "sha256, path, name, type, size_bytes, created_at, updated_at, meta"
PENDING_COLUMNS = ("path, name, type, size_bytes, created_at, meta, tags, legacy_id, source, "
                   "status, attempts")
"""

SQLITE_FLOOR_CHILD = """
def work():
    out = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    for pragma in ("foreign_keys = ON", "journal_mode = WAL", "synchronous = NORMAL"):
        out.execute("PRAGMA " + pragma)
    out.execute("BEGIN")
    tag_ids = {}
    for _, name, color, created in legacy_tags():
        cursor = out.execute("INSERT INTO tags (name, color, created_at) VALUES (?, ?, ?)",
                             (name, color, created))
        tag_ids[name] = cursor.lastrowid
    out.execute("COMMIT")
    for models, links, staged in batches(tag_ids):
        out.execute("BEGIN")
        out.executemany(f"INSERT INTO models ({MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        models)
        out.executemany("INSERT INTO model_tags (model_sha256, tag_id) VALUES (?, ?)", links)
        out.executemany(f"INSERT INTO pending_import ({PENDING_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", staged)
        out.execute("COMMIT")
    out.close()
measured(work)
"""

POSTGRES_FLOOR_CHILD = """
import psycopg
def work():
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as out:
        tag_ids = {}
        for _, name, color, created in legacy_tags():
            tag_ids[name] = out.execute(
                "INSERT INTO tags (name, color, created_at) VALUES (%s, %s, %s) RETURNING id",
                (name, color, created)).fetchone()[0]
        out.commit()
        cursor = out.cursor()
        for models, links, staged in batches(tag_ids):
            for table, columns, rows in (("models", MODEL_COLUMNS, models),
                                         ("model_tags", "model_sha256, tag_id", links),
                                         ("pending_import", PENDING_COLUMNS, staged)):
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            out.commit()
measured(work)
"""


# -- the data ----------------------------------------------------------------------------


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
    made = 1_723_000_000_000
    tags = [LegacyTag(tag.id, tag.name, tag.color, made) for tag in system_tags()] + [
        LegacyTag(len(SYSTEM_TAG_NAMES) + 1 + k, f"tag-{k:02d}", palette[k % len(palette)], made)
        for k in range(USER_TAGS)
    ]
    write_legacy_catalog(path, rows=legacy_rows(n), tags=tags, links=legacy_links(n))


# -- running and comparing ---------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one child process measured: wall and CPU seconds, peak RSS before and after."""

    seconds: float
    cpu: float
    base_kib: int
    peak_kib: int
    written: int  # bytes this process caused to be written to storage (/proc/self/io)
    report: dict[str, Any] | None = None


def run_child(code: str, legacy: Path, url: str, batch: int) -> Run:
    script = CHILD_PRELUDE.format(root=str(ROOT)) + code
    out = subprocess.run(
        [sys.executable, "-c", script, str(legacy), url, str(batch)],
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return Run(**json.loads(out.stdout.strip().splitlines()[-1]))


# The rows both must have written; a SELECT per table, ordered, without updated_at and ids.
COMPARED = {
    "models": "SELECT sha256, path, path_key, name, type, base, size_bytes, mtime_ns, created_at, "
    "meta FROM models ORDER BY sha256",
    "model_tags": "SELECT model_sha256, t.name FROM model_tags JOIN tags t ON t.id = tag_id "
    "ORDER BY model_sha256, t.name",
    "pending_import": "SELECT path, path_key, name, type, size_bytes, created_at, meta, tags, "
    "legacy_id, source, status, attempts, last_error, sha256 FROM pending_import ORDER BY path",
    "tags": "SELECT name, color, created_at FROM tags ORDER BY name",
}


def digest_rows(url: str) -> dict[str, tuple[int, str]]:
    """(row count, SHA-256 of the rows as text) for each compared table of a catalog."""
    result = {}
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
    else:
        import psycopg

        conn = psycopg.connect(plain_postgres(url))
    try:
        for table, sql in COMPARED.items():
            sha, count = hashlib.sha256(), 0
            for row in conn.execute(sql):
                sha.update(repr(tuple(str(v) for v in row)).encode())
                count += 1
            result[table] = (count, sha.hexdigest())
    finally:
        conn.close()
    return result


def check_same_rows(floor_url: str, import_url: str) -> None:
    floor, imported = digest_rows(floor_url), digest_rows(import_url)
    if floor != imported:
        differ = [t for t in COMPARED if floor[t] != imported[t]]
        raise SystemExit(
            f"the floor and the import wrote different rows in {differ} "
            f"(floor {[floor[t] for t in differ]}, import {[imported[t] for t in differ]}): "
            "the floor no longer does the import's work; fix the floor first."
        )


@dataclass(frozen=True)
class Figures:
    """Medians of the runs of one (backend, size)."""

    backend: str
    rows: int
    floor: Run
    imported: Run

    @property
    def ratio(self) -> float:
        return self.imported.seconds / self.floor.seconds


def median_run(runs: list[Run]) -> Run:
    return Run(
        seconds=statistics.median(r.seconds for r in runs),
        cpu=statistics.median(r.cpu for r in runs),
        base_kib=max(r.base_kib for r in runs),
        peak_kib=max(r.peak_kib for r in runs),  # the worst: RSS is a limit, not a speed
        written=int(statistics.median(r.written for r in runs)),
        report=runs[0].report,
    )


def measure(
    backend: str, legacy: Path, rows: int, target: ScratchCatalogs, args: argparse.Namespace
) -> Figures:
    floor_code = FLOOR_PRELUDE + (
        SQLITE_FLOOR_CHILD if backend == "sqlite" else POSTGRES_FLOOR_CHILD
    )
    floors: list[Run] = []
    imports: list[Run] = []
    for run in range(args.repeat):  # interleaved, so a burst of load hits both alike
        floor_url, import_url = target.fresh("floor"), target.fresh("import")
        turns = [(floors, floor_code, floor_url), (imports, IMPORT_CHILD, import_url)]
        # Each goes first in turn: what a run leaves behind (its writes for the
        # kernel to flush, a warm cache) does not always fall on the same one.
        for runs, code, url in turns if run % 2 == 0 else turns[::-1]:
            runs.append(run_child(code, legacy, url, args.batch))
        if run == 0 and not args.no_check:
            check_same_rows(floor_url, import_url)
        target.drop_all()
        print(
            f"  {backend} {rows:>9,} run {run + 1}: floor {floors[-1].seconds:6.2f} s, "
            f"import {imports[-1].seconds:6.2f} s",
            flush=True,
        )
    return Figures(backend, rows, median_run(floors), median_run(imports))


# -- report ------------------------------------------------------------------------------


def ratio_target(backend: str, rows: int) -> float | None:
    return RATIO_TARGETS.get((backend, rows), RATIO_TARGETS.get((backend, None)))


def print_table(results: list[Figures], repeat: int) -> bool:
    ok = True
    print(
        f"\nmedians of {repeat} run(s); peak RSS is the highest of the runs; written: bytes "
        "the process wrote to storage (SQLite only: the server writes for PostgreSQL), which "
        "the load of the machine does not change"
    )
    header = (
        f"{'backend':10} {'rows':>9} {'what':6} {'seconds':>8} {'cpu s':>7} {'rows/s':>9} "
        f"{'us/row':>7} {'written':>9} {'peak RSS':>10} {'ratio':>6}  target"
    )
    print(header)
    print("-" * len(header))
    for fig in results:
        target = ratio_target(fig.backend, fig.rows)
        met = target is None or fig.ratio <= target
        rss_met = fig.imported.peak_kib < RSS_TARGET_KIB
        ok &= met and rss_met
        for what, run in (("floor", fig.floor), ("import", fig.imported)):
            written = f"{run.written / 1e6:6.0f} MB" if fig.backend == "sqlite" else "-"
            line = (
                f"{fig.backend:10} {fig.rows:>9,} {what:6} {run.seconds:8.2f} {run.cpu:7.2f} "
                f"{fig.rows / run.seconds:9,.0f} {run.seconds / fig.rows * 1e6:7.1f} "
                f"{written:>9} {run.peak_kib / 1024:6.1f} MiB"
            )
            if what == "import":
                goal = "" if target is None else f"<= {target} {'ok' if met else 'MISSED'}"
                rss = "" if rss_met else "; peak RSS MISSED (< 200 MB)"
                line += f" {fig.ratio:6.2f}  {goal}{rss}"
            print(line)
    for backend in dict.fromkeys(fig.backend for fig in results):
        sizes = sorted((f for f in results if f.backend == backend), key=lambda f: f.rows)
        if len(sizes) < 2:
            continue
        small, large = sizes[0], sizes[-1]
        for what in ("floor", "import"):
            a, b = (fig.floor if what == "floor" else fig.imported for fig in (small, large))
            growth = (b.seconds / large.rows) / (a.seconds / small.rows)
            text = (
                f"linear growth, {backend} {what}: us/row at {large.rows:,} / at {small.rows:,} "
                f"= {growth:.2f}"
            )
            if what == "import":
                met = growth <= GROWTH_TARGET
                ok &= met
                text += f" (target <= {GROWTH_TARGET}: {'ok' if met else 'MISSED'})"
            print(text)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000], help="[100000]")
    parser.add_argument("--full", action="store_true", help="add 1,000,000 rows")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure [3]")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"rows per batch [{BATCH}]")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("MODELVAULT_TEST_POSTGRES_URL"),
        help="a PostgreSQL URL whose user may create databases "
        "[MODELVAULT_TEST_POSTGRES_URL; none: SQLite only]",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-check", action="store_true", help="skip the row comparison")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a temp dir)")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.rows) | ({1_000_000} if args.full else set()))
    backends = ["sqlite"] + ([] if args.no_postgres or not args.postgres else ["postgresql"])
    print(
        f"modelvault import benchmark: {', '.join(backends)}; rows {sizes}; batch {args.batch}; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="modelvault-import-bench-", dir=args.dir) as tmp:
        folder = Path(tmp)
        for rows in sizes:
            legacy = folder / f"hikaze_mm-{rows}.sqlite3"
            started = time.perf_counter()
            build_legacy(legacy, rows)
            print(
                f"legacy file: {rows:,} rows, {legacy.stat().st_size / 1e6:.0f} MB, "
                f"built in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            for backend in backends:
                target = ScratchCatalogs(backend, folder, args.postgres)
                try:
                    results.append(measure(backend, legacy, rows, target, args))
                finally:
                    target.drop_all()
            legacy.unlink()
    ok = print_table(results, args.repeat)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


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


def fresh(folder: Path, name: str) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{folder / name}{suffix}").unlink(missing_ok=True)
    return folder / name


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
    ``RSS_TARGET_KIB * 1024``."""
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
        verdict = "ok" if peak < RSS_TARGET_KIB * 1024 else "MISSED"
        ok = ok and peak < RSS_TARGET_KIB * 1024
        print(
            f"{label} ({models:,} models, {tags:,} tags, {links:,} links; built in {built:.0f} s):"
            f" import {run['seconds']:.1f} s, peak RSS {peak / 1e6:.0f} MB"
            f" (+{(run['peak_kib'] - run['base_kib']) * 1024 / 1e6:.0f} MB over its baseline),"
            f" target < {RSS_TARGET_KIB * 1024 / 1e6:.0f} MB {verdict}"
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
