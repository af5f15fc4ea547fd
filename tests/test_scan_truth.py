"""One odd file never stops a scan, and what a scan reports is true: files that
cannot be catalogued are skipped and named, moves are settled before anything
is called missing, a dry run writes nothing, ``-v`` names every change.

Real catalogs on both backends, real files (FIFOs, names that are not UTF-8)
under tmp_path, the real workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ntpath
import os
import posixpath
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support.scan import FAST, opens_under, staging, write

from modelvault import DatabaseManager
from modelvault.catalog.values import PREVIOUS_PATHS
from modelvault.cli import main
from modelvault.db.models import Model, PendingImport
from modelvault.migration.worker import process_pending
from modelvault.scan import FileChange, scan_roots, settle_after_hashing, shown
from modelvault.scan.walk import NOT_UTF8, folder_identity


def put(path: Path, data: bytes) -> Path:
    write(path, data)
    return path


NOT_UTF8_NAME = b"caf\xe9 \x1b[31m.safetensors"  # Latin-1 bytes, and a terminal escape


def odd_files(folder: Path) -> dict[str, str]:
    """Model-named files no catalog can hold, each with the reason it is skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.safetensors")
    (folder / "empty.safetensors").touch()
    (folder / "dangling.safetensors").symlink_to(folder / "nowhere")
    with open(os.path.join(os.fsencode(folder), NOT_UTF8_NAME), "wb") as f:
        f.write(b"weights")
    bad_folder = os.path.join(os.fsencode(folder), b"\xff-folder")
    os.mkdir(bad_folder)
    with open(os.path.join(bad_folder, b"x.safetensors"), "wb") as f:
        f.write(b"weights")
    return {
        str(folder / "pipe.safetensors"): "a FIFO, not a model file",
        str(folder / "empty.safetensors"): "an empty file",
        str(folder / "dangling.safetensors"): "a link to nothing",
        os.fsdecode(os.path.join(os.fsencode(folder), NOT_UTF8_NAME)): NOT_UTF8,
    }


@pytest.mark.posix_only("a FIFO, a link to nothing and names that are not UTF-8")
def test_files_that_cannot_be_catalogued_are_skipped_named_and_the_rest_staged(
    db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "models" / "loras"
    good = [put(root / f"good{i}.safetensors", b"g" * i) for i in range(1, 4)]
    odd = odd_files(root)
    changes: list[FileChange] = []
    report = scan_roots(db, [tmp_path / "models"], on_change=changes.append)
    assert sorted(staging(db)) == sorted(str(root / f"good{i}.safetensors") for i in (1, 2, 3))
    assert (report.files_seen, report.staged_new, report.files_skipped) == (3, 3, 4)
    assert sorted(report.skipped_files) == sorted(f"{shown(p)}: {w}" for p, w in odd.items())
    assert r"caf\xe9 \x1b[31m.safetensors: its name" in " ".join(report.skipped_files)
    assert report.skipped == [f"{root}/\\xff-folder: {NOT_UTF8}"]
    skipped = {c.path for c in changes if c.kind == "skipped"}
    assert skipped == {*odd, os.fsdecode(os.path.join(os.fsencode(root), b"\xff-folder"))}
    assert process_pending(db, settings=FAST).imported == 3
    assert len(good) == db.count_models()


def test_a_catalogued_file_that_became_empty_is_skipped_not_missing(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path = tmp_path / "m" / "a.safetensors"
    write(path, b"weights")
    scan_roots(db, [tmp_path / "m"])
    process_pending(db, settings=FAST)
    path.write_bytes(b"")
    report = scan_roots(db, [tmp_path / "m"])
    assert (report.files_skipped, report.missing, report.staged) == (1, 0, 0)
    assert report.skipped_files == [f"{path}: an empty file"]


@pytest.mark.posix_only("a FIFO, a link to nothing and names that are not UTF-8")
def test_a_scan_that_finds_only_odd_files_exits_0_every_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = odd_files(tmp_path / "models")
    catalog = str(tmp_path / "catalog.sqlite3")
    for _ in range(2):
        assert main(["scan", str(tmp_path / "models"), "--db", catalog, "--hash"]) == 0
        out = capsys.readouterr().out
        assert "4 model files skipped:" in out
        for path, why in odd.items():
            assert f"    {shown(path)}: {why}" in out
        assert "\x1b" not in out


@pytest.mark.posix_only("a FIFO")
def test_v_prints_one_escaped_line_per_changed_file(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    a, b, c = (put(root / "loras" / f"{n}.safetensors", n.encode() * 9) for n in "abc")
    DatabaseManager(db_url).init_db()
    assert main(["scan", str(root), "--db", db_url, "--hash", "-q"]) == 0
    capsys.readouterr()
    os.rename(a, root / "loras" / "a2.safetensors")
    c.unlink()
    write(root / "loras" / "new\x1b[2J.safetensors", b"new")
    b.write_bytes(b"b, version 2")
    os.mkfifo(root / "loras" / "fifo.pt")
    logger = logging.getLogger("modelvault")  # -v gives it a handler and a level: undone after
    handlers, level = list(logger.handlers), logger.level
    try:
        assert main(["scan", str(root), "--db", db_url, "--hash", "-v"]) == 0
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    kinds = ("new: ", "changed: ", "moved: ", "missing: ", "skipped: ")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(kinds)]
    loras = root / "loras"
    assert sorted(lines) == sorted(
        [
            f"new: {loras / 'a2.safetensors'}",
            f"new: {loras}/new\\x1b[2J.safetensors",
            f"changed: {b}",
            f"skipped: {loras / 'fifo.pt'} (a FIFO, not a model file)",
            f"missing: {a} (a file of its size waits to be hashed: it may have moved there)",
            f"missing: {c} (a file of its size waits to be hashed: it may have moved there)",
            f"moved: {a} -> {loras / 'a2.safetensors'}",
            f"missing: {c}",
        ]
    )


def test_three_moves_and_three_deletes_are_three_moved_and_three_missing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models" / "checkpoints"
    files = [put(root / f"m{i}.ckpt", f"model {i}".encode()) for i in range(6)]
    assert main(["scan", str(tmp_path / "models"), "--db", db_url, "--hash", "-q"]) == 0
    (root / "moved").mkdir()
    for path in files[:3]:
        os.rename(path, root / "moved" / path.name)
    for path in files[3:]:
        path.unlink()
    capsys.readouterr()
    assert main(["scan", str(tmp_path / "models"), "--db", db_url, "--hash", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["scan"]
    assert (report["moved"], report["missing"], report["maybe_moved"]) == (3, 3, 0)
    assert sorted(report["missing_paths"]) == sorted(str(p) for p in files[3:])
    db = DatabaseManager(db_url)
    assert sorted(m.path for m in db.find_models(missing=True)) == sorted(map(str, files[3:]))


def copy_then_delete(db: DatabaseManager, root: Path) -> tuple[str, Path, Path]:
    """A catalogued file with notes and a copy of it (a duplicate row), then the
    catalogued one deleted: (sha256, old path, copy)."""
    original = root / "loras" / "a.safetensors"
    sha = write(original, b"lora a")
    scan_roots(db, [root])
    process_pending(db, settings=FAST)
    db.upsert_model({"sha256": sha, "meta": {"description": "mine"}, "tags": ["fav"]})
    copy = put(root / "backup" / "a copy.safetensors", b"lora a")
    scan_roots(db, [root])
    assert process_pending(db, settings=FAST).duplicate == 1
    original.unlink()
    return sha, original, copy


def test_a_duplicate_takes_over_a_gone_model_without_reading_it(
    db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    sha, original, copy = copy_then_delete(db, root)
    with opens_under(root) as opened:
        report = scan_roots(db, [root])
    assert opened == []
    assert (report.moved, report.missing, report.maybe_moved, report.staged) == (1, 0, 0, 0)
    assert report.moved_paths == [f"{original} -> {copy}"]
    model = db.get_model(sha)
    assert model is not None
    assert (model.path, model.name) == (str(copy), "a copy.safetensors")
    assert model.meta[PREVIOUS_PATHS] == [str(original)]
    assert model.meta["description"] == "mine"
    assert model.mtime_ns == copy.stat().st_mtime_ns
    assert {t.name for t in model.tags} == {"fav"}
    assert staging(db) == {}
    again = scan_roots(db, [root])
    assert (again.unchanged, again.moved, again.missing, again.staged) == (1, 0, 0, 0)


def test_a_changed_duplicate_is_hashed_before_it_takes_over(
    db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    sha, _original, copy = copy_then_delete(db, root)
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
    report = scan_roots(db, [root])
    assert (report.moved, report.requeued, report.maybe_moved, report.missing) == (0, 1, 1, 0)
    assert process_pending(db, settings=FAST).moved == 1
    settle_after_hashing(db, report)
    assert (report.moved, report.maybe_moved, report.missing) == (1, 0, 0)
    model = db.get_model(sha)
    assert model is not None
    assert model.path == str(copy)


def snapshot(db: DatabaseManager) -> tuple[list[Any], list[Any]]:
    with db.session_scope() as s:
        models = [(m.sha256, m.path, m.name, m.meta, m.mtime_ns) for m in s.scalars(select(Model))]
        rows = [(r.id, r.path, r.status, r.meta) for r in s.scalars(select(PendingImport))]
    return sorted(models), sorted(rows)


def test_a_dry_run_writes_nothing_and_says_what_a_scan_would_do(
    db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    _sha, original, copy = copy_then_delete(db, root)
    write(root / "loras" / "new.safetensors", b"new")
    before = snapshot(db)
    changes: list[FileChange] = []
    report = scan_roots(db, [root], dry_run=True, on_change=changes.append)
    assert snapshot(db) == before
    assert (report.dry_run, report.staged_new, report.moved, report.missing) == (True, 1, 1, 0)
    assert {(c.kind, c.path, c.to) for c in changes} == {
        ("new", str(root / "loras" / "new.safetensors"), None),
        ("moved", str(original), str(copy)),
    }
    real = scan_roots(db, [root])
    assert (real.staged_new, real.moved) == (1, 1)


def test_scan_dry_run_leaves_the_catalog_files_as_they_were(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    catalog = tmp_path / "catalog.sqlite3"
    write(root / "loras" / "a.safetensors", b"a")
    assert main(["scan", str(root), "--db", str(catalog), "--hash", "-q"]) == 0
    write(root / "loras" / "b.safetensors", b"b")
    (root / "loras" / "a.safetensors").unlink()

    def files() -> dict[str, str]:
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in tmp_path.glob("catalog.sqlite3*")
        }

    before = files()
    capsys.readouterr()
    assert main(["scan", str(root), "--db", str(catalog), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert files() == before
    assert "1 staged (1 new" in out
    assert "dry run: nothing was written" in out
    nowhere = tmp_path / "new-catalog.sqlite3"
    assert main(["scan", str(root), "--db", str(nowhere), "--dry-run"]) == 0
    assert not nowhere.exists()
    assert "1 staged (1 new" in capsys.readouterr().out
    assert main(["scan", str(root), "--db", str(catalog), "--dry-run", "--hash"]) == 2


@pytest.mark.parametrize(
    ("flavour", "same", "different"),
    [
        (ntpath, ["C:\\Models\\Loras", "c:/models/loras/", "C:\\models\\LORAS\\."], "C:\\Models"),
        (ntpath, ["\\\\nas\\share\\models", "//NAS/share/models/"], "\\\\nas\\share\\models\\x"),
        (posixpath, ["/mnt/drive/models", "/mnt/drive/models/"], "/mnt/drive/Models"),
    ],
)
def test_folder_identity_falls_back_to_the_real_path_where_inodes_are_0(
    flavour: Any, same: list[str], different: str
) -> None:
    keys = {folder_identity(7, 0, path, flavour) for path in same}
    assert len(keys) == 1
    assert folder_identity(7, 0, different, flavour) not in keys
    assert folder_identity(7, 1234, same[0], flavour) == (7, 1234)
    with pytest.raises(ValueError, match="inode 0"):
        folder_identity(7, 0, None, flavour)


@pytest.mark.posix_only("symlinks (on Windows, a privilege)")
def test_a_file_system_with_inode_0_is_walked_whole(
    db: DatabaseManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WinFsp mounts and Google Drive report inode 0 for every folder: no subfolder
    may be taken for its parent (a loop) and left out."""
    root = tmp_path / "drive"
    files = [
        put(root / "loras" / "sub" / "deeper" / "a.safetensors", b"a"),
        put(root / "vae" / "b.safetensors", b"b"),
    ]
    (root / "loras" / "sub" / "back").symlink_to(root / "loras")
    real_stat = os.stat

    def stat_with_inode_0(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        st = real_stat(path, *args, **kwargs)
        if not stat.S_ISDIR(st.st_mode):
            return st
        return os.stat_result((st.st_mode, 0, st.st_dev, *tuple(st)[3:]))

    monkeypatch.setattr(os, "stat", stat_with_inode_0)
    report = scan_roots(db, [root])
    monkeypatch.undo()
    assert sorted(staging(db)) == sorted(map(str, files))
    assert report.loops == [f"{root / 'loras' / 'sub' / 'back'} leads back to a parent folder"]
