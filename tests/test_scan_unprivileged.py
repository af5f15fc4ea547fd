"""An unreadable folder, for real: root lists any folder, so when the tests run as
root the scan runs as the unprivileged user ``nobody`` (effective ids only, so
the test process gets root back afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import as_nobody, running_as_root, shared_folder

from modelvault import DatabaseManager
from modelvault.migration.worker import process_pending
from modelvault.scan import scan_roots

pytestmark = pytest.mark.posix_only("acts as the user nobody, with POSIX file modes")


@pytest.fixture
def shared() -> Iterator[Path]:
    with shared_folder() as folder:
        yield folder


def test_files_in_an_unreadable_folder_are_reported_not_missing(
    db: DatabaseManager, db_url: str, shared: Path
) -> None:
    if not running_as_root():
        pytest.skip("not root: test_scan.py locks a folder with chmod instead")
    tree = shared / "models"
    for folder, name in (("loras", "a.safetensors"), ("checkpoints", "b.ckpt")):
        (tree / folder).mkdir(parents=True)
        (tree / folder / name).write_bytes(name.encode())
    # Modes first: a chmod moves a file's change time, which a scan compares.
    for path in tree.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (tree / "checkpoints").chmod(0o700)  # root's own: nobody cannot list it
    if db.is_sqlite:  # a catalog of its own where nobody may write
        db = DatabaseManager(shared / "catalog.sqlite3")
        db.init_db()
    scan_roots(db, [tree])
    process_pending(db, workers=1)
    db.dispose()
    if db.is_sqlite:
        (shared / "catalog.sqlite3").chmod(0o666)

    url = db.engine.url.render_as_string(hide_password=False)
    with as_nobody():
        fresh = DatabaseManager(url)  # new connections, opened as nobody
        try:
            report = scan_roots(fresh, [tree])
        finally:
            fresh.dispose()
    assert report.unreadable == [f"{tree / 'checkpoints'}: Permission denied"]
    assert (report.files_seen, report.unchanged, report.missing) == (1, 1, 0)
