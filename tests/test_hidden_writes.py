"""A file rewritten in place with its size kept and its mtime put back (``rsync
--inplace -t``, a sync tool, a restore) is caught by its inode change time:
while it is hashed (the hash is refused and the file read again), and by the
next scan (the file is read again). A catalog of an older version, which kept
no change times, is not read again whole on its first scan.

Real catalogs on both backends, real files, the real workers. POSIX only: on
Windows ``st_ctime`` is the creation time, which a write does not move.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support import rewrite_hiding
from support.scan import catalogue_as_found, make_tree, opens_under, scan_and_hash, staging, write

from modelvault import DatabaseManager, Settings
from modelvault.catalog.stamp_meta import SCAN_MTIME_NS
from modelvault.catalog.values import PREVIOUS_SHA256
from modelvault.db.models import Model, PendingImport
from modelvault.file_stamp import FILE_STAT, stamp_of, stat_marks
from modelvault.migration.worker import WorkerEvent, process_pending
from modelvault.scan import scan_roots

pytestmark = pytest.mark.posix_only("the inode change time: on Windows st_ctime is creation time")

OLD, NEW = b"the old weights " * 4096, b"the new weights " * 4096  # 64 KiB each, same size


def marks_of(path: Path | str) -> dict[str, int]:
    return stat_marks(stamp_of(os.stat(path)))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RewriteWhileHashed:
    """A worker subscriber that rewrites ``path`` hiding (see ``rewrite_hiding``) as
    the first bytes of it are hashed, once; it keeps every event."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path, self.data = str(path), data
        self.done = threading.Event()
        self.events: list[WorkerEvent] = []

    def __call__(self, event: WorkerEvent) -> None:
        self.events.append(event)
        if event.kind == "progress" and event.path == self.path and not self.done.is_set():
            self.done.set()
            rewrite_hiding(self.path, self.data)

    def of(self, kind: str) -> list[WorkerEvent]:
        return [e for e in self.events if e.kind == kind]


@pytest.mark.parametrize("chunk", [4096, 2 * 1024 * 1024], ids=["relay", "one read"])
def test_a_hash_taken_while_a_rewrite_hides_is_refused_and_the_file_read_again(
    db: DatabaseManager, tmp_path: Path, chunk: int
) -> None:
    path = tmp_path / "models" / "loras" / "a.safetensors"
    write(path, OLD)
    scan_roots(db, [tmp_path / "models"])
    rewrite = RewriteWhileHashed(path, NEW)
    settings = Settings(retry_backoff_seconds=0, max_attempts=3, hash_chunk_bytes=chunk)

    report = process_pending(db, settings=settings, on_event=rewrite, workers=1)

    assert rewrite.done.is_set()
    (error,) = rewrite.of("error")
    assert error.outcome == "retried"
    assert error.message is not None
    assert "was written to while it was being hashed" in error.message
    assert (report.retried, report.imported) == (1, 1)
    assert db.get_model(sha(OLD)) is None  # never recorded: those bytes were not all there
    model = db.get_model(sha(NEW))
    assert model is not None
    assert (model.path, model.mtime_ns) == (str(path), os.stat(path).st_mtime_ns)
    assert model.meta[FILE_STAT] == marks_of(path)
    assert scan_roots(db, [tmp_path / "models"]).unchanged == 1


def test_the_next_scan_reads_again_a_file_rewritten_with_its_mtime_put_back(
    db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    path, copy = root / "loras" / "a.safetensors", root / "other" / "a.safetensors"
    write(path, OLD)
    write(copy, OLD)  # a second copy of the content, hashed after it: a ``duplicate`` row
    scan_and_hash(db, root)
    assert staging(db)[str(copy)].status == "duplicate"
    db.upsert_model({"sha256": sha(OLD), "meta": {"description": "mine"}})

    rewrite_hiding(path, NEW)
    rewrite_hiding(copy, NEW[::-1])
    looked = scan_roots(db, [root], dry_run=True)
    assert (looked.staged_changed, looked.requeued, looked.unchanged) == (1, 1, 0)
    report, result = scan_and_hash(db, root)

    assert (report.staged_changed, report.requeued, report.unchanged) == (1, 1, 0)
    assert (result.replaced, result.imported) == (1, 1)
    model = db.get_model_by_path(str(path))
    assert model is not None
    assert model.sha256 == sha(NEW)
    assert model.meta[PREVIOUS_SHA256] == [sha(OLD)]
    assert model.meta["description"] == "mine"
    assert model.meta[FILE_STAT] == marks_of(path)
    copied = db.get_model_by_path(str(copy))
    assert copied is not None
    assert copied.sha256 == sha(NEW[::-1])
    again = scan_roots(db, [root])
    assert (again.unchanged, again.staged, again.requeued) == (2, 0, 0)


def test_a_file_touched_is_read_once_then_found_unchanged(
    db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    path = root / "a.safetensors"
    write(path, OLD)
    scan_and_hash(db, root)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the bytes are the same
    report, result = scan_and_hash(db, root)
    assert (report.staged_changed, result.merged) == (1, 1)
    model = db.get_model(sha(OLD))
    assert model is not None
    assert (model.mtime_ns, model.meta[FILE_STAT]) == (os.stat(path).st_mtime_ns, marks_of(path))
    assert scan_roots(db, [root]).unchanged == 1


def test_notes_rewritten_keep_the_stamp_and_a_new_mtime_drops_it(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path = tmp_path / "models" / "a.safetensors"
    write(path, OLD)
    scan_and_hash(db, tmp_path / "models")
    notes = db.upsert_model({"sha256": sha(OLD), "meta": {"description": "mine"}})
    assert notes.meta == {"description": "mine", FILE_STAT: marks_of(path)}
    moved = db.upsert_model({"sha256": sha(OLD), "mtime_ns": 1})  # no longer that file's
    assert moved.meta == {"description": "mine"}


def test_a_catalog_of_an_older_version_is_not_read_again_and_takes_the_stamps(
    db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "big"
    files = make_tree(root, 600)  # more than one batch of writes
    catalogue_as_found(db, files, stamped=False)  # size and mtime: as an older version left it
    copy = root / "copy.safetensors"
    write(copy, b"y")
    older_duplicate(db, copy, of=files[0])
    before = updated_times(db)

    looked = scan_roots(db, [root], dry_run=True)
    assert (looked.unchanged, looked.staged, looked.requeued) == (601, 0, 0)
    assert all(FILE_STAT not in meta for meta in model_metas(db).values())  # nothing written
    with opens_under(root) as opened:
        report = scan_roots(db, [root])

    assert opened == []
    assert (report.unchanged, report.staged, report.requeued, report.missing) == (601, 0, 0, 0)
    metas = model_metas(db)
    assert {path: meta[FILE_STAT] for path, meta in metas.items()} == {
        str(file): marks_of(file) for file in files
    }
    assert updated_times(db) == before  # a stamp recorded is no update of the model
    row = staging(db)[str(copy)]
    assert (row.status, row.meta[FILE_STAT]) == ("duplicate", marks_of(copy))
    # From now on, a rewrite that puts the mtime back is seen.
    rewrite_hiding(files[7], b"z")
    rewrite_hiding(copy, b"z")
    again = scan_roots(db, [root])
    assert (again.unchanged, again.staged_changed, again.requeued) == (599, 1, 1)


def older_duplicate(db: DatabaseManager, copy: Path, of: Path) -> None:
    """A ``duplicate`` row as an older version left it (the scan's mtime, no file_stat),
    of the model of ``of`` (``catalogue_as_found`` made its sha256 from its path)."""
    with db.session_scope() as session:
        session.add(
            PendingImport(
                path=str(copy),
                name=copy.name,
                size_bytes=copy.stat().st_size,
                meta={SCAN_MTIME_NS: copy.stat().st_mtime_ns},
                tags=[],
                source="scan",
                status="duplicate",
                sha256=sha(str(of).encode()),
            )
        )


def model_metas(db: DatabaseManager) -> dict[str, dict[str, Any]]:
    with db.engine.connect() as conn:
        return dict(conn.execute(select(Model.path, Model.meta)).all())


def updated_times(db: DatabaseManager) -> dict[str, Any]:
    with db.engine.connect() as conn:
        return dict(conn.execute(select(Model.path, Model.updated_at)).all())
