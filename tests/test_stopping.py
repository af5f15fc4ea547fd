"""One switch stops every run: a ``HashControl`` given to the import, the scan
and the workers holds each while paused and ends each once stopped, between
committed steps, so that running again completes the rest."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.legacy import with_batch
from support.scan import write

from modelvault import DatabaseManager, HashCancelled
from modelvault.hashing import HashControl
from modelvault.migration.importer import import_legacy_data
from modelvault.migration.sample import LegacyModel, write_legacy_catalog
from modelvault.scan import scan_roots
from modelvault.scan.writer import WRITE_BATCH

ROWS, BATCH = 12, 5
DEADLINE = 60.0


def legacy_file(tmp_path: Path) -> Path:
    path = tmp_path / "legacy.sqlite3"
    rows = [LegacyModel(id=i, path=f"/models/m{i}.safetensors") for i in range(1, ROWS + 1)]
    write_legacy_catalog(path, rows=rows)
    return path


def placed(db: DatabaseManager) -> int:
    """Legacy rows that reached the catalog: models and staging rows."""
    return db.count_models() + sum(db.staging_counts().values())


def staged(db: DatabaseManager) -> int:
    return sum(db.staging_counts().values())


def test_a_stopped_import_ends_after_its_first_batch_and_runs_again_to_the_end(
    db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, catalog = legacy_file(tmp_path), with_batch(db, BATCH)
    control = HashControl()
    control.stop()
    with pytest.raises(HashCancelled, match=r"import of .*legacy\.sqlite3 was stopped"):
        import_legacy_data(legacy, catalog, control=control)
    assert placed(db) == BATCH  # the first batch, committed
    report = import_legacy_data(legacy, catalog)
    assert placed(db) == ROWS
    assert report.already_present == BATCH


def test_a_paused_import_holds_after_a_batch_until_it_is_resumed(
    db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, catalog = legacy_file(tmp_path), with_batch(db, BATCH)
    control = HashControl()
    control.pause()
    batches = [threading.Event() for _ in range(3)]
    reports: list[object] = []

    def reported(done: int, total: int) -> None:
        batches[-(-done // BATCH) - 1].set()

    def run() -> None:
        reports.append(import_legacy_data(legacy, catalog, control=control, progress=reported))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert batches[0].wait(DEADLINE), "the first batch was not reported"
    # Unheld, the second batch would follow within milliseconds.
    assert not batches[1].wait(1.0), "the import went on while paused"
    assert placed(db) == BATCH
    control.resume()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert len(reports) == 1
    assert all(batch.is_set() for batch in batches)
    assert placed(db) == ROWS


def test_a_stopped_scan_keeps_what_it_wrote_and_a_second_scan_stages_the_rest(
    db: DatabaseManager, tmp_path: Path
) -> None:
    files = WRITE_BATCH + 3
    for i in range(files):
        write(tmp_path / "loras" / f"f{i:04}.safetensors", f"content {i}".encode())
    control = HashControl()
    control.stop()
    with pytest.raises(HashCancelled, match="scan was stopped"):
        scan_roots(db, [tmp_path / "loras"], control=control)
    assert staged(db) == WRITE_BATCH
    report = scan_roots(db, [tmp_path / "loras"])
    assert staged(db) == files
    assert report.files_seen == files
