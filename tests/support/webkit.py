"""Catalogs for the web tests: the demo's, migrated or only written."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from modelvault.database import DatabaseManager
from modelvault.migration.demo import build_demo
from modelvault.migration.manager import MigrationManager


def demo_legacy(tmp_path: Path) -> tuple[DatabaseManager, Path]:
    """The demo's legacy catalog and model files, and an empty catalog beside them."""
    legacy = build_demo(tmp_path / "demo", file_mb=0.02)
    db = DatabaseManager(tmp_path / "demo" / "catalog.sqlite3")
    db.init_db()
    return db, legacy


@contextlib.contextmanager
def migrated_demo(tmp_path: Path) -> Iterator[DatabaseManager]:
    """The demo migrated: models with previews, coloured tags, a queue with leftovers."""
    db, legacy = demo_legacy(tmp_path)
    manager = MigrationManager.for_database(db)
    assert manager.start_full_migration(legacy)
    assert manager.wait(120), "the demo's migration did not end"
    assert manager.status().state.value == "done", manager.status().error
    yield db
    manager.close(30)
    db.dispose()


def first_with_previews(db: DatabaseManager) -> tuple[str, str]:
    """The SHA-256 of a model with a stored preview, and that preview's name."""
    for model in db.find_models():
        for preview in model.meta.get("previews", []):
            return model.sha256, str(preview["file"])
    raise AssertionError("the demo has no model with a preview")
