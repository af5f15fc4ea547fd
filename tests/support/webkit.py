"""Catalogs for the web tests: the demo's, migrated or only written, and a legacy
catalog of one checkpoint-sized file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from modelvault.database import DatabaseManager
from modelvault.migration.demo import build_demo
from modelvault.migration.manager import MigrationManager
from modelvault.migration.sample import LegacyModel, write_legacy_catalog


def demo_legacy(tmp_path: Path) -> tuple[DatabaseManager, Path]:
    """The demo's legacy catalog and model files, and an empty catalog beside them."""
    legacy = build_demo(tmp_path / "demo", file_mb=0.02)
    db = DatabaseManager(tmp_path / "demo" / "catalog.sqlite3")
    db.init_db()
    return db, legacy


def big_file_legacy(tmp_path: Path, size: int) -> tuple[DatabaseManager, Path]:
    """A legacy catalog of one unhashed model file of ``size`` bytes, and an empty
    catalog beside it. The file is sparse (no disk is used) but read whole when
    hashed, as a real checkpoint is: at a few GB/s a run of 32 GB lasts seconds."""
    model = tmp_path / "models" / "checkpoints" / "big.safetensors"
    model.parent.mkdir(parents=True)
    with model.open("wb") as out:
        out.write(b"a checkpoint's header")
        out.truncate(size)
    legacy = write_legacy_catalog(
        tmp_path / "legacy.sqlite3",
        rows=[LegacyModel(id=1, path=str(model), type="checkpoint", size_bytes=size)],
    )
    db = DatabaseManager(tmp_path / "catalog.sqlite3")
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
