"""Workers in separate processes: sharing one catalog, and being killed.

- Several worker processes drain one catalog together (4 on PostgreSQL, 2 on
  SQLite): every file is hashed exactly once and every row ends in exactly one
  final place.
- A worker process is SIGKILLed again and again, at random moments and at
  chosen ones (inside a transaction just before it commits, right after a
  commit, in the middle of a file), and restarted each time: the catalog it
  ends with equals the one an uninterrupted run builds.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from support.worker import REPO, Child

from modelvault import DatabaseManager, Settings
from modelvault.config import sqlite_url
from modelvault.db.models import Model, PendingImport, Tag, model_tags
from modelvault.migration.worker import WorkerEvent, process_pending

# A worker process started afresh (its own interpreter, as on another host).
# argv: catalog URL, event log. It says "ready", waits for "go" on stdin (so all
# start together), logs one line per finished row, and prints its report.
CHILD = r"""
import json, sys, threading
from modelvault import DatabaseManager
from modelvault.migration.worker import process_pending

url, log_path = sys.argv[1:3]
db = DatabaseManager(url)
lock = threading.Lock()
log = open(log_path, "a", buffering=1)

def on_event(e):
    if e.kind == "finished":
        with lock:
            log.write(json.dumps([e.path, e.outcome, e.sha256]) + "\n")

print("ready", flush=True)
sys.stdin.readline()
report = process_pending(db, workers=2, on_event=on_event)
print(json.dumps(report.to_dict()), flush=True)
"""


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    path = tmp_path / "worker_child.py"
    path.write_text(CHILD)
    return path


def staged_row(path: str, **values: Any) -> dict[str, Any]:
    created = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    row = {
        "path": path,
        "name": Path(path).name,
        "type": "lora",
        "base": None,
        "size_bytes": None,
        "created_at": created,
        "meta": {},
        "tags": [],
        "status": "pending",
        "attempts": 0,
    }
    row.update(values)
    return row


def bulk_stage(db: DatabaseManager, rows: list[dict[str, Any]]) -> None:
    with db.session_scope() as s:
        s.execute(insert(PendingImport), rows)


# -- many processes, one catalog ------------------------------------------------


@pytest.mark.slow
def test_worker_processes_share_one_catalog_without_doing_a_row_twice(
    db: DatabaseManager, db_url: str, tmp_path: Path, child_script: Path
) -> None:
    processes = 2 if db.is_sqlite else 4
    rng = random.Random(1234)
    colours = {f"tag{i}": f"#{i:02x}{i:02x}{i:02x}" if i % 3 else None for i in range(12)}
    folder = tmp_path / "files"
    folder.mkdir()
    rows, contents = [], {}
    for i in range(2000):
        path = str(folder / f"{i:04d}.safetensors")
        tags = [{"name": n, "color": colours[n]} for n in rng.sample(sorted(colours), i % 4)]
        if i % 50 == 7:  # 40 files that are gone
            pass
        elif i % 50 == 9 and i > 100:  # 38 copies of an earlier file
            contents[path] = contents[str(folder / f"{i - 100:04d}.safetensors")]
            Path(path).write_bytes(contents[path])
        else:
            contents[path] = rng.randbytes(rng.randrange(1, 4096))
            Path(path).write_bytes(contents[path])
        rows.append(staged_row(path, tags=tags, size_bytes=len(contents.get(path, b""))))
    bulk_stage(db, rows)

    logs = [tmp_path / f"worker-{n}.log" for n in range(processes)]
    children = [Child(child_script, db_url, log) for log in logs]
    for child in children:
        assert child.next_line() == "ready"
    for child in children:  # all start together, so they really compete
        child.go()
    reports = [child.report() for child in children]

    finished = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    per_path = Counter(path for path, _, _ in finished)
    assert set(per_path) == {r["path"] for r in rows}
    assert max(per_path.values()) == 1, "a row was finished twice"
    existing = [p for p in per_path if p in contents]
    assert sum(r["files_hashed"] for r in reports) == len(existing), "a file was hashed twice"
    assert all(log.read_text() for log in logs), "a worker process did nothing"

    by_sha: dict[str, set[str]] = {}
    for path in existing:
        by_sha.setdefault(hashlib.sha256(contents[path]).hexdigest(), set()).add(path)
    staged_tags = {r["path"]: {(t["name"], t["color"]) for t in r["tags"]} for r in rows}
    with db.session_scope() as s:
        models = {m.sha256: m for m in s.scalars(select(Model))}
        model_tag_sets = {sha: {(t.name, t.color) for t in m.tags} for sha, m in models.items()}
        left = {r.path: (r.status, r.sha256) for r in s.scalars(select(PendingImport))}
    assert set(models) == set(by_sha)
    for sha, model in models.items():
        assert model.path in by_sha[sha]
        assert model_tag_sets[sha] == set().union(*(staged_tags[p] for p in by_sha[sha]))
    in_models = {m.path for m in models.values()}
    assert in_models.isdisjoint(left)
    assert in_models | set(left) == {r["path"] for r in rows}  # each row in exactly one place
    assert Counter(status for status, _ in left.values()) == {"missing": 40, "duplicate": 38}
    for path, (status, sha) in left.items():
        if status == "duplicate":
            assert sha is not None
            assert path in by_sha[sha]


# -- killed and restarted ---------------------------------------------------------


@dataclass
class Dataset:
    """Files and staged rows covering every way a row can end, and what to compare."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    catalogued: list[dict[str, Any]] = field(default_factory=list)  # models before the run
    twins: dict[str, str] = field(default_factory=dict)  # path -> label of its copy group


def crash_dataset(folder: Path, rng: random.Random) -> Dataset:
    data = Dataset()
    colours = {"style": "#ff0000", "fav": "#00ff00", "todo": None, "sdxl": "#0000ff"}

    def tags(n: int) -> list[dict[str, Any]]:
        return [{"name": t, "color": colours[t]} for t in sorted(colours)[:n]]

    def write(name: str, content: bytes) -> str:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return str(path)

    for i in range(1200):  # plain new files, a few big enough to be killed mid-file
        size = 6 * 1024 * 1024 if i % 150 == 5 else rng.randrange(1, 20_000)
        path = write(f"new/{i:03d}.safetensors", rng.randbytes(size))
        # "late" comes without a colour at first, then with one: it must end coloured.
        late = [{"name": "late", "color": "#123456" if i >= 600 else None}] if i % 7 == 0 else []
        data.rows.append(staged_row(path, tags=tags(i % 5) + late, meta={"n": i}))
    for i in range(10):  # gone
        data.rows.append(staged_row(str(folder / f"gone/{i}.ckpt"), tags=tags(2)))
    for i in range(4):  # unreadable on every attempt -> failed
        (folder / f"dirs/{i}.ckpt").mkdir(parents=True)
        data.rows.append(staged_row(str(folder / f"dirs/{i}.ckpt"), tags=tags(1)))
    for i in range(10):  # a copy of a catalogued model that is still there -> duplicate
        content = rng.randbytes(3000)
        original = write(f"catalogued/{i}.bin", content)
        data.catalogued.append(
            {"sha256": hashlib.sha256(content).hexdigest(), "path": original, "tags": ["old"]}
        )
        data.rows.append(staged_row(write(f"copies/{i}.bin", content), tags=tags(3)))
    for i in range(10):  # a catalogued model whose file is gone -> moved
        content = rng.randbytes(3000)
        data.catalogued.append(
            {
                "sha256": hashlib.sha256(content).hexdigest(),
                "path": str(folder / f"vanished/{i}.bin"),
                "meta": {"notes": f"n{i}"},
                "tags": [{"name": "old", "color": "#abcdef"}],
            }
        )
        data.rows.append(staged_row(write(f"moved/{i}.bin", content), tags=tags(4)))
    for i in range(6):  # the path is catalogued with other content -> conflict
        path = write(f"clash/{i}.bin", rng.randbytes(500))
        data.catalogued.append({"sha256": f"{i:064x}", "path": path})
        data.rows.append(staged_row(path, tags=tags(2)))
    for i in range(10):  # two staged copies: one becomes the model, one a duplicate
        content = rng.randbytes(2000)
        for side in "ab":
            path = write(f"twins/{i}{side}.bin", content)
            data.twins[path] = f"twin-{i}"
            data.rows.append(staged_row(path, name=f"twin{i}.bin", tags=tags(3)))
    order = list(range(len(data.rows)))
    rng.shuffle(order)  # outcomes of every kind all along the queue
    data.rows = [data.rows[i] for i in order]
    return data


def seed(db: DatabaseManager, data: Dataset) -> None:
    for model in data.catalogued:
        db.upsert_model(model)
    bulk_stage(db, data.rows)


def snapshot(db: DatabaseManager, twins: dict[str, str]) -> dict[str, Any]:
    """The whole catalog as plain values (no ids or timestamps).

    Of two staged copies of the same content, whichever is hashed first becomes
    the model and the other the duplicate; a restart may change which. So the
    paths of copies are replaced by the label of their group, and the model's
    mtime (each copy has its own) is left out: everything else must match.
    """

    def label(text: str | None) -> str | None:
        if text is None:
            return None
        for path, name in twins.items():
            text = text.replace(path, name)
        return text

    with db.session_scope() as s:
        models = sorted(
            (
                label(m.path),
                m.sha256,
                m.name,
                m.type,
                m.base,
                m.size_bytes,
                None if m.path in twins else m.mtime_ns,
                json.dumps(m.meta, sort_keys=True),
                sorted((t.name, t.color) for t in m.tags),
            )
            for m in s.scalars(select(Model))
        )
        tags = sorted((t.name, t.color) for t in s.scalars(select(Tag)))
        links = len(s.execute(select(model_tags)).all())
        staging = sorted(
            (
                label(r.path),
                r.status,
                r.sha256,
                r.attempts,
                label(r.last_error),
                json.dumps(r.tags, sort_keys=True),
                json.dumps(r.meta, sort_keys=True),
                r.claimed_by,
                r.lease_expires_at,
                r.not_before,
            )
            for r in s.scalars(select(PendingImport))
        )
    return {"models": models, "tags": tags, "links": links, "staging": staging}


def unfinished(db: DatabaseManager) -> int:
    with db.session_scope() as s:
        statuses = s.scalars(select(PendingImport.status)).all()
    return sum(status in ("pending", "claimed") for status in statuses)


def kill_plan(rng: random.Random, rounds: int) -> Iterator[tuple[str, int]]:
    """What each round does: kill at a random moment, or at a chosen one.

    With it, the rows the worker claims at once: one, a few, or the default 8,
    so kills land in claims and finishes of every size.
    """
    for i in range(rounds):
        kind = ("random", "at-commit", "after-commit", "at-progress")[i % 4]
        batch = rng.choice((1, 3, 8))
        if kind == "random":
            yield f"random:{rng.uniform(0.0, 0.15):.3f}", batch
        elif kind == "at-progress":
            yield f"at-progress:{rng.randrange(1, 30)}", batch
        else:
            yield f"{kind}:{rng.randrange(1, 25)}", batch


CRASH_ROUNDS = 24


def crash_settings(url: str, batch: int = 8) -> Settings:
    # A one-second lease: a restarted worker takes a killed one's rows over quickly.
    return Settings(
        db_url=url,
        lease_seconds=1,
        max_attempts=3,
        retry_backoff_seconds=0,
        hash_chunk_bytes=1024 * 1024,
        sqlite_busy_timeout_seconds=60,
        worker_batch_size=batch,
    )


def crash_worker(pipe: Connection, url: str, mode: str, batch: int) -> None:
    """A worker process forked from the test, to be SIGKILLed.

    ``mode``: "run" (until done), "at-commit:N" / "after-commit:N" (block inside
    the N-th transaction just before its COMMIT / as the N-th begins, just after
    the one before it committed), "at-progress:N" (block in the N-th
    progress callback, in the middle of hashing a file). It sends "blocked"
    first: that is how the parent kills it exactly there.

    Forked rather than started afresh, so the restarts cost milliseconds
    instead of an interpreter start each; it opens its own engine and never
    touches the connections it inherited.
    """
    db = DatabaseManager(url, settings=crash_settings(url, batch))
    kind, _, count = mode.partition(":")
    seen = [0]
    lock = threading.Lock()

    def block(*_: object) -> None:
        with lock:
            seen[0] += 1
            if seen[0] != int(count):
                return
        pipe.send("blocked")
        threading.Event().wait()

    if kind == "at-commit":
        event.listen(db.engine, "commit", block)
    elif kind == "after-commit":  # the next transaction begins: the last one is committed
        event.listen(db.engine, "begin", block)

    def on_event(e: WorkerEvent) -> None:
        if e.kind == "progress" and kind == "at-progress":
            block()

    pipe.send("ready")
    report = process_pending(db, workers=1, on_event=on_event)
    pipe.send(report.to_dict())


class Forked:
    """A forked ``crash_worker`` and the messages it sends."""

    def __init__(self, url: str, mode: str, batch: int = 8) -> None:
        fork = multiprocessing.get_context("fork")  # POSIX only, as the tests using it are marked
        self.messages, sender = fork.Pipe(duplex=False)
        self.proc = fork.Process(target=crash_worker, args=(sender, url, mode, batch), daemon=True)
        self.proc.start()
        sender.close()

    def receive(self, timeout: float = 60.0) -> Any:
        """The next message; None if the process ended without sending one."""
        if not self.messages.poll(timeout):
            self.kill()
            raise AssertionError(f"no message from the worker process in {timeout} s")
        try:
            return self.messages.recv()
        except EOFError:
            return None

    def kill(self) -> None:
        assert self.proc.pid is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(30)


@pytest.fixture(scope="module")
def crash_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, dict[str, Any]]:
    """The dataset, and the catalog an uninterrupted run makes of it (on SQLite)."""
    folder = tmp_path_factory.mktemp("crash")
    data = crash_dataset(folder / "files", random.Random(7))
    url = sqlite_url(folder / "reference.sqlite3")
    reference = DatabaseManager(url, settings=crash_settings(url))
    reference.init_db()
    seed(reference, data)
    whole = Forked(url, "run")
    assert whole.receive() == "ready"
    report = whole.receive(120)
    whole.proc.join(30)
    assert report is not None
    assert whole.proc.exitcode == 0
    expected = snapshot(reference, data.twins)
    reference.dispose()
    assert ("late", "#123456") in expected["tags"]
    assert Counter(row[1] for row in expected["staging"]) == {
        "missing": 10,
        "failed": 4,
        "duplicate": 20,
        "conflict": 6,
    }
    return data, expected


@pytest.mark.slow
@pytest.mark.posix_only("forks worker processes and kills them with SIGKILL")
def test_killing_the_worker_at_any_moment_loses_and_duplicates_nothing(
    db: DatabaseManager, db_url: str, crash_case: tuple[Dataset, dict[str, Any]]
) -> None:
    data, expected = crash_case
    seed_value = random.randrange(1 << 30)
    rng = random.Random(seed_value)
    seed(db, data)
    kills = 0
    for plan, batch in kill_plan(rng, CRASH_ROUNDS):
        kind, _, arg = plan.partition(":")
        child = Forked(db_url, "run" if kind == "random" else plan, batch)
        assert child.receive() == "ready"
        if kind == "random":
            child.proc.join(float(arg))  # a bounded wait: the kill lands at that moment
            alive = child.proc.is_alive()
        else:
            alive = child.receive() == "blocked"
        if alive:
            child.kill()
            kills += 1
        else:
            child.proc.join(30)
    assert kills >= 20, f"only {kills} kills landed (seed {seed_value})"
    assert unfinished(db) > 0, f"the kills came too late to matter (seed {seed_value})"

    final = Forked(db_url, "run")
    assert final.receive() == "ready"
    assert final.receive(120) is not None  # it took over the leases the killed ones left
    final.proc.join(30)
    assert final.proc.exitcode == 0

    assert snapshot(db, data.twins) == expected, f"seed {seed_value}"


# -- Ctrl-C -------------------------------------------------------------------------

INTERRUPTED = r"""
import sys
from modelvault import DatabaseManager
from modelvault.migration.worker import process_pending

said = []

def on_event(e):
    if e.kind == "progress" and not said:
        said.append(True)
        print("hashing", flush=True)

db = DatabaseManager(sys.argv[1])
try:
    process_pending(db, workers=2, on_event=on_event)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


@pytest.mark.slow
@pytest.mark.posix_only("sends SIGINT to a child process (Windows has CTRL_C_EVENT)")
def test_ctrl_c_in_the_calling_thread_hands_every_row_back(db_url: str, tmp_path: Path) -> None:
    db = DatabaseManager(db_url)
    db.init_db()
    for i in range(6):
        path = tmp_path / f"{i}.safetensors"
        with open(path, "wb") as f:  # big enough to be in the middle of one at Ctrl-C
            f.truncate(1024 * 1024 * 1024)
        db.add_pending_import({"path": str(path), "size_bytes": 1024 * 1024 * 1024})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, db_url], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "hashing"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)

    assert (proc.returncode, out.strip()) == (130, "interrupted")
    with db.session_scope() as s:
        statuses = Counter(s.scalars(select(PendingImport.status)))
    assert statuses["claimed"] == 0  # handed back before the process ended, not left to expire
    assert statuses["pending"] >= 4
    db.dispose()
