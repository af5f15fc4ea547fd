"""The folder scan: new and changed files are staged, unchanged ones never read.

Real catalogs on both backends, real files under tmp_path, the real workers
to hash what a scan staged.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete
from support import running_as_root
from support.scan import (
    FAST,
    catalogue_as_found,
    make_tree,
    opens_under,
    scan_and_hash,
    staging,
    write,
)

from modelvault import DatabaseManager, ScanError
from modelvault.catalog.stamp_meta import SCAN_SOURCE
from modelvault.catalog.values import PREVIOUS_PATHS, PREVIOUS_SHA256
from modelvault.db.models import Model
from modelvault.migration.worker import process_pending
from modelvault.scan import ScanRoot, find_missing, scan_roots, settle_after_hashing


def tag_names(db: DatabaseManager, sha: str) -> set[str]:
    model = db.get_model(sha)
    assert model is not None, f"no model {sha}"
    return {t.name for t in model.tags}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write(root / "loras" / "a.safetensors", b"lora a")
    write(root / "checkpoints" / "sd" / "b.ckpt", b"checkpoint b")
    write(root / "loras" / "notes.txt", b"not a model")
    write(root / "loras" / "c.safetensors.part", b"half a download")
    write(root / "loras" / ".hidden.safetensors", b"hidden")
    write(root / ".trash" / "d.safetensors", b"in a hidden folder")
    write(root / "vae" / "e.safetensors", b"being fetched")
    write(root / "vae" / "e.safetensors.aria2", b"aria2 control file")
    return root


def test_new_files_are_staged_with_the_type_of_their_folder(
    db: DatabaseManager, tree: Path
) -> None:
    report = scan_roots(db, [tree])
    assert (report.files_seen, report.staged_new, report.unchanged) == (2, 2, 0)
    assert report.partial_downloads == 3  # .part, .aria2 and the file it is writing
    rows = staging(db)
    assert {p: (r.type, r.source, r.size_bytes) for p, r in rows.items()} == {
        str(tree / "checkpoints" / "sd" / "b.ckpt"): ("checkpoint", SCAN_SOURCE, 12),
        str(tree / "loras" / "a.safetensors"): ("lora", SCAN_SOURCE, 6),
    }
    result = process_pending(db, settings=FAST)
    assert result.imported == 2
    model = db.get_model_by_path(str(tree / "loras" / "a.safetensors"))
    assert model is not None
    assert model.type == "lora"
    assert model.mtime_ns == os.stat(tree / "loras" / "a.safetensors").st_mtime_ns
    assert "scan_mtime_ns" not in model.meta


def test_a_second_scan_of_unchanged_files_stages_nothing(db: DatabaseManager, tree: Path) -> None:
    scan_and_hash(db, tree)
    again = scan_roots(db, [tree])
    assert (again.files_seen, again.unchanged, again.staged, again.missing) == (2, 2, 0, 0)
    assert staging(db) == {}


def test_staged_rows_are_not_staged_twice(db: DatabaseManager, tree: Path) -> None:
    scan_roots(db, [tree])
    again = scan_roots(db, [tree])
    assert (again.already_staged, again.staged) == (2, 0)
    assert len(staging(db)) == 2


def test_a_rescan_of_20000_unchanged_files_opens_none_of_them(
    db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "big"
    catalogue_as_found(db, make_tree(root, 20_000))  # the bench's tree, at this size
    with opens_under(root) as opened:
        report = scan_roots(db, [root])
    assert opened == []
    assert (report.files_seen, report.unchanged, report.staged, report.missing) == (
        20_000,
        20_000,
        0,
        0,
    )


def test_a_file_whose_size_changed_keeps_its_model_tags_and_notes(
    db: DatabaseManager, tree: Path
) -> None:
    scan_and_hash(db, tree)
    path = tree / "loras" / "a.safetensors"
    old = db.get_model_by_path(str(path))
    assert old is not None
    db.upsert_model({"sha256": old.sha256, "meta": {"description": "mine"}, "tags": ["fav"]})
    new_sha = write(path, b"lora a, version 2")
    report, result = scan_and_hash(db, tree)
    assert (report.staged_changed, report.unchanged) == (1, 1)
    assert result.replaced == 1
    assert db.get_model(old.sha256) is None
    model = db.get_model(new_sha)
    assert model is not None
    assert model.path == str(path)
    assert model.meta["description"] == "mine"
    assert model.meta[PREVIOUS_SHA256] == [old.sha256]
    assert model.size_bytes == path.stat().st_size
    assert tag_names(db, new_sha) == {"fav"}
    assert scan_roots(db, [tree]).staged == 0


def test_same_size_new_mtime_is_read_again(db: DatabaseManager, tree: Path) -> None:
    scan_and_hash(db, tree)
    path = tree / "loras" / "a.safetensors"
    old_sha = hashlib.sha256(b"lora a").hexdigest()
    new_sha = write(path, b"lora b")  # same length, other bytes
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    report, result = scan_and_hash(db, tree)
    assert report.staged_changed == 1
    assert result.replaced == 1
    assert db.get_model(old_sha) is None
    assert db.get_model(new_sha) is not None


def test_a_touched_file_with_the_same_content_is_merged_and_then_left_alone(
    db: DatabaseManager, tree: Path
) -> None:
    scan_and_hash(db, tree)
    path = tree / "loras" / "a.safetensors"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    report, result = scan_and_hash(db, tree)
    assert report.staged_changed == 1
    assert result.merged == 1
    model = db.get_model_by_path(str(path))
    assert model is not None
    assert model.mtime_ns == st.st_mtime_ns + 5_000_000_000
    assert scan_roots(db, [tree]).staged == 0


@pytest.mark.parametrize("target", ["loras/renamed.safetensors", "vae/moved.safetensors"])
def test_a_moved_or_renamed_file_keeps_its_tags_and_notes(
    db: DatabaseManager, tree: Path, target: str
) -> None:
    scan_and_hash(db, tree)
    old_path = tree / "loras" / "a.safetensors"
    sha = hashlib.sha256(b"lora a").hexdigest()
    db.upsert_model({"sha256": sha, "meta": {"description": "mine"}, "tags": ["fav"]})
    os.rename(old_path, tree / target)
    report = scan_roots(db, [tree])
    assert (report.staged_new, report.missing, report.maybe_moved) == (1, 0, 1)
    assert process_pending(db, settings=FAST).moved == 1
    settle_after_hashing(db, report)
    assert (report.moved, report.maybe_moved, report.missing) == (1, 0, 0)
    assert report.moved_paths == [f"{old_path} -> {tree / target}"]
    model = db.get_model(sha)
    assert model is not None
    assert model.path == str(tree / target)
    assert model.name == os.path.basename(target)  # named after its file: renamed with it
    assert model.meta["description"] == "mine"
    assert model.meta[PREVIOUS_PATHS] == [str(old_path)]
    assert tag_names(db, sha) == {"fav"}


def test_a_copied_file_is_a_duplicate_and_is_not_read_again(
    db: DatabaseManager, tree: Path
) -> None:
    scan_and_hash(db, tree)
    copy = tree / "loras" / "copy.safetensors"
    write(copy, b"lora a")
    report, result = scan_and_hash(db, tree)
    assert report.staged_new == 1
    assert result.duplicate == 1
    assert staging(db)[str(copy)].status == "duplicate"
    again = scan_roots(db, [tree])
    assert (again.unchanged, again.staged) == (3, 0)


def test_overwritten_in_place_while_a_copy_of_the_old_content_lives_on(
    db: DatabaseManager, tree: Path
) -> None:
    scan_and_hash(db, tree)
    path = tree / "loras" / "a.safetensors"
    old_sha = hashlib.sha256(b"lora a").hexdigest()
    db.upsert_model({"sha256": old_sha, "tags": ["fav"]})
    copy = tree / "loras" / "backup.safetensors"
    write(copy, b"lora a")
    scan_and_hash(db, tree)  # the copy: a duplicate of the model at path
    new_sha = write(path, b"lora a, re-downloaded")
    _report, result = scan_and_hash(db, tree)
    assert result.replaced == 1
    replaced, kept = db.get_model(new_sha), db.get_model(old_sha)
    assert replaced is not None
    assert replaced.path == str(path)
    assert tag_names(db, new_sha) == {"fav"}
    assert kept is not None
    assert kept.path == str(copy)
    assert str(copy) not in staging(db)
    assert scan_roots(db, [tree]).staged == 0


def test_a_deleted_file_is_reported_and_kept(db: DatabaseManager, tree: Path) -> None:
    scan_and_hash(db, tree)
    gone = tree / "checkpoints" / "sd" / "b.ckpt"
    gone.unlink()
    report = scan_roots(db, [tree])
    assert (report.missing, report.missing_paths, report.staged) == (1, [str(gone)], 0)
    assert db.get_model_by_path(str(gone)) is not None
    assert [m.path for m in find_missing(db)] == [str(gone)]
    assert find_missing(db, [tree / "loras"]) == []


@pytest.mark.posix_only("symlinks (on Windows, a privilege)")
def test_a_symlink_loop_is_reported_and_the_walk_ends(db: DatabaseManager, tree: Path) -> None:
    (tree / "loras" / "back-up").symlink_to(tree)
    (tree / "vae" / "to-loras").symlink_to(tree / "loras")
    report = scan_roots(db, [tree])
    assert report.loops == [f"{tree / 'loras' / 'back-up'} leads back to a parent folder"]
    assert report.files_seen == 2  # loras/ is listed once, however it is reached
    assert len(report.skipped) == 1
    assert str(tree / "vae" / "to-loras") in report.skipped[0]


@pytest.mark.posix_only("symlinks (on Windows, a privilege)")
def test_a_symlinked_folder_is_followed(db: DatabaseManager, tree: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "disk2" / "big-loras"
    write(elsewhere / "x.safetensors", b"x")
    (tree / "loras" / "more").symlink_to(elsewhere)
    scan_roots(db, [tree])
    row = staging(db)[str(tree / "loras" / "more" / "x.safetensors")]
    assert row.type == "lora"


@pytest.mark.posix_only("locks a folder with chmod")
def test_files_in_an_unreadable_folder_are_not_called_missing(
    db: DatabaseManager, tree: Path
) -> None:
    if running_as_root():
        pytest.skip("runs as root, who can list any folder: see test_scan_unprivileged.py")
    scan_and_hash(db, tree)
    locked = tree / "checkpoints"
    locked.chmod(0)
    try:
        report = scan_roots(db, [tree])
    finally:
        locked.chmod(0o755)
    assert [u.split(":")[0] for u in report.unreadable] == [str(locked)]
    assert (report.missing, report.unchanged) == (0, 1)


def test_a_root_that_does_not_exist_is_one_clear_sentence(
    db: DatabaseManager, tmp_path: Path
) -> None:
    with pytest.raises(ScanError, match=r"the model folder .*nowhere does not exist: check"):
        scan_roots(db, [tmp_path / "nowhere"])
    assert staging(db) == {}


def test_a_root_of_fixed_type(db: DatabaseManager, tree: Path) -> None:
    scan_roots(db, [ScanRoot(str(tree / "checkpoints"), "lora")])
    assert {r.type for r in staging(db).values()} == {"lora"}


def test_a_changed_copy_is_queued_again_and_becomes_a_model(
    db: DatabaseManager, tree: Path
) -> None:
    scan_and_hash(db, tree)
    copy = tree / "loras" / "copy.safetensors"
    write(copy, b"lora a")
    scan_and_hash(db, tree)
    assert staging(db)[str(copy)].status == "duplicate"
    new_sha = write(copy, b"lora a, edited")
    report, result = scan_and_hash(db, tree)
    assert report.requeued == 1
    assert result.imported == 1
    model = db.get_model(new_sha)
    assert model is not None
    assert model.path == str(copy)
    assert "scan_mtime_ns" not in model.meta
    assert staging(db) == {}


def test_overwritten_with_content_catalogued_elsewhere_is_a_conflict(
    db: DatabaseManager, tree: Path
) -> None:
    scan_and_hash(db, tree)
    path = tree / "loras" / "a.safetensors"
    old_sha = hashlib.sha256(b"lora a").hexdigest()
    write(path, b"checkpoint b")  # now the same bytes as checkpoints/sd/b.ckpt
    _, result = scan_and_hash(db, tree)
    assert result.conflict == 1
    row = staging(db)[str(path)]
    assert row.status == "conflict"
    assert row.last_error is not None
    assert "overwritten with the content catalogued at" in row.last_error
    kept = db.get_model(old_sha)
    assert kept is not None
    assert kept.path == str(path)  # nothing catalogued was changed


def test_a_tree_deeper_than_the_recursion_limit(db: DatabaseManager, tmp_path: Path) -> None:
    top = tmp_path / "deep"
    folders = [top]
    for _ in range(sys.getrecursionlimit() + 200):  # (pathlib's mkdir(parents=True) recurses)
        folders.append(folders[-1] / "d")
    model = folders[-1] / "x.safetensors"
    try:
        for folder in folders:
            folder.mkdir()
        write(model, b"deep")
        report = scan_roots(db, [top])
        assert report.staged_new == 1
        assert list(staging(db)) == [str(model)]
    finally:  # pytest's own clean-up of tmp_path recurses: undo the tree bottom-up
        model.unlink(missing_ok=True)
        for folder in reversed(folders):
            if folder.exists():
                folder.rmdir()


def test_a_copy_whose_model_was_deleted_is_queued_again(db: DatabaseManager, tree: Path) -> None:
    scan_and_hash(db, tree)
    copy = tree / "loras" / "copy.safetensors"
    write(copy, b"lora a")
    scan_and_hash(db, tree)
    sha = hashlib.sha256(b"lora a").hexdigest()
    with db.session_scope(immediate=True) as s:
        s.execute(delete(Model).where(Model.sha256 == sha))
    (tree / "loras" / "a.safetensors").unlink()
    report, result = scan_and_hash(db, tree)
    assert report.requeued == 1
    assert result.imported == 1
    model = db.get_model(sha)
    assert model is not None
    assert model.path == str(copy)


def test_a_scan_right_after_a_migration_reads_nothing_again(
    db: DatabaseManager, tmp_path: Path
) -> None:
    from modelvault.migration.importer import import_legacy_data
    from modelvault.migration.sample import LegacyModel, scan_time_ms, write_legacy_catalog

    root = tmp_path / "models"
    trusted, unhashed, copy = (root / "loras" / n for n in ("a.bin", "b.bin", "a copy.bin"))
    digest = write(trusted, b"a" * 1000)
    write(unhashed, b"b" * 1000)
    write(copy, b"a" * 1000)
    seen = scan_time_ms(trusted.stat().st_mtime_ns)  # the legacy app hashed it once written
    rows = [
        LegacyModel(1, str(trusted), "loras", size_bytes=1000, hash_hex=digest, created_at=seen),
        LegacyModel(2, str(unhashed), "loras", size_bytes=1000),
        LegacyModel(3, str(copy), "loras", size_bytes=1000),
    ]
    legacy = write_legacy_catalog(tmp_path / "hikaze_mm.sqlite3", rows=rows)
    assert import_legacy_data(legacy, db).imported == 1  # the trusted hash, not read
    worked = process_pending(db, workers=1)
    assert (worked.imported, worked.duplicate) == (1, 1)
    report = scan_roots(db, [root])
    assert (report.files_seen, report.unchanged, report.staged) == (3, 3, 0)
