"""Curating while workers hash on the same catalog: no update is lost on either side.

- The worst interleaving, forced (PostgreSQL, where transactions run side by
  side): one side reads a model, the other writes it, the first writes back.
  The side that came second must wait for the first and build on its write.
- Worker threads in this process, and a worker process, hash and merge files
  into models while a person tags them and rewrites their notes again and
  again: every model ends with the worker's merge and the person's last edit.
  On SQLite a curation also waits its turn instead of failing on a locked catalog.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from support import wait_for, write_file

from modelvault import DatabaseManager
from modelvault.migration.worker import process_pending

REPO = Path(__file__).resolve().parent.parent


def stock(db: DatabaseManager, folder: Path, count: int) -> list[str]:
    """``count`` catalogued files queued again (so a worker merges into their models:
    a prompt and a tag), and as many new files; returns the catalogued SHA-256s."""
    shas = []
    for i in range(count):
        path = folder / f"known_{i:03d}.safetensors"
        sha = write_file(path, 2048, i)
        db.upsert_model({"sha256": sha, "path": str(path), "meta": {"description": "start"}})
        db.add_pending_import({"path": str(path), "tags": ["hashed"], "meta": {"prompts": f"p{i}"}})
        shas.append(sha)
        write_file(folder / f"new_{i:03d}.safetensors", 2048, 1000 + i)
        db.add_pending_import({"path": str(folder / f"new_{i:03d}.safetensors")})
    return shas


class Curator(threading.Thread):
    """A person at work: round after round, a new note and a new tag on every model,
    until ``done`` is set (at least one round). Keeps what the last round wrote."""

    def __init__(self, db: DatabaseManager, shas: list[str], done: threading.Event) -> None:
        super().__init__(daemon=True)
        self.db, self.shas, self.done = db, shas, done
        self.rounds = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.rounds or not self.done.is_set():
                for sha in self.shas:
                    self.db.update_model(sha, note=f"round {self.rounds}")
                    self.db.add_tags(sha, [f"r{self.rounds}"])
                self.rounds += 1
        except BaseException as exc:
            self.error = exc


def check_nothing_lost(db: DatabaseManager, shas: list[str], curator: Curator) -> None:
    assert curator.error is None, curator.error
    last = curator.rounds - 1
    for i, sha in enumerate(shas):
        model = db.get_model(sha)
        assert model is not None
        assert model.meta["description"] == f"round {last}", model.meta  # the person's
        assert model.meta["prompts"] == f"p{i}", model.meta  # the worker's
        names = {t.name for t in model.tags}
        assert names >= {"hashed", *(f"r{r}" for r in range(curator.rounds))}, names
    assert db.staging_counts()["pending"] == 0
    assert db.count_models() == 2 * len(shas)


def test_curating_beside_worker_threads(db: DatabaseManager, tmp_path: Path) -> None:
    shas = stock(db, tmp_path / "models", 40)
    done = threading.Event()
    curator = Curator(db, shas, done)
    curator.start()
    try:
        report = process_pending(db, workers=2)
    finally:
        done.set()
        curator.join(120)
    assert not curator.is_alive()
    assert report.merged == len(shas)
    check_nothing_lost(db, shas, curator)


def test_curating_beside_a_worker_process(db: DatabaseManager, db_url: str, tmp_path: Path) -> None:
    shas = stock(db, tmp_path / "models", 40)
    done = threading.Event()
    curator = Curator(db, shas, done)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "modelvault", "worker", "--workers", "2", "-q", "--db", db_url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    curator.start()
    try:
        out, err = worker.communicate(timeout=300)
    finally:
        done.set()
        curator.join(120)
    assert worker.returncode == 0, out + err
    assert not curator.is_alive()
    check_nothing_lost(db, shas, curator)


# -- the worst interleaving, forced ------------------------------------------------


def waiting_on_a_lock(url: str) -> Callable[[], bool]:
    """Whether another session of the test database waits for a row lock now."""
    engine = create_engine(url)

    def look() -> bool:
        with engine.connect() as conn:
            return bool(
                conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            )

    return look


def pause_after(
    db: DatabaseManager, thread_prefix: str, is_the_read: Callable[[str], bool]
) -> tuple[threading.Event, threading.Event]:
    """In threads named ``thread_prefix...``: after the statement ``is_the_read`` picks,
    say so (first event) and hold on until the second event is set."""
    read, go_on = threading.Event(), threading.Event()

    def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        mine = threading.current_thread().name.startswith(thread_prefix)
        if mine and is_the_read(statement) and not read.is_set():
            read.set()
            assert go_on.wait(60), "the other side never moved"

    event.listen(db.engine, "after_cursor_execute", after)
    return read, go_on


def _worker_reads_the_model(statement: str) -> bool:
    return "FROM models" in statement and "WHERE models.path" in statement


def _curator_reads_the_model(statement: str) -> bool:
    return "FROM models" in statement and "WHERE models.sha256" in statement


@pytest.mark.parametrize("first", ["worker", "curator"])
def test_a_model_read_by_one_side_and_written_by_the_other(
    postgres_database: str, tmp_path: Path, first: str
) -> None:
    from support.postgres import reset_postgres

    reset_postgres(postgres_database)
    db = DatabaseManager(postgres_database)
    db.init_db()
    (sha,) = stock(db, tmp_path / "models", 1)
    db.forget_pending(statuses=["pending"])  # the one catalogued file's row only:
    db.add_pending_import({"path": db.get_model(sha).path, "meta": {"prompts": "p0"}})  # type: ignore[union-attr]
    if first == "worker":
        read, go_on = pause_after(db, "modelvault-worker", _worker_reads_the_model)
    else:
        read, go_on = pause_after(db, "curator", _curator_reads_the_model)
    other_waits = waiting_on_a_lock(postgres_database)
    second_done = threading.Event()
    errors: list[BaseException] = []

    def curate() -> None:
        try:
            if first == "worker":
                assert read.wait(60)
            db.update_model(sha, note="mine")
        except BaseException as exc:
            errors.append(exc)
        finally:
            if first == "worker":
                second_done.set()

    def hash_it() -> None:
        if first == "curator":
            assert read.wait(60)
        process_pending(db, workers=1)
        if first == "curator":
            second_done.set()

    threads = [
        threading.Thread(target=curate, name="curator", daemon=True),
        threading.Thread(target=hash_it, name="hasher", daemon=True),
    ]
    for thread in threads:
        thread.start()
    assert read.wait(60)
    # The second side either finished (it did not wait: the first one's write
    # then wipes its change) or waits for the first one's lock.
    wait_for(lambda: second_done.is_set() or other_waits(), "the second side to write or wait")
    go_on.set()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    model = db.get_model(sha)
    assert model is not None
    assert model.meta["description"] == "mine"
    assert model.meta["prompts"] == "p0"
    db.dispose()
