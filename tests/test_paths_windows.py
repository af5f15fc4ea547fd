"""One file, one key, on every path: the catalog compares paths as the system
that holds the files does.

Windows is played on this system by ``path_rules(WINDOWS)``: every path is then
compared as Windows compares it (and a drive letter can be given the folder it
leads to), while the files are real files under tmp_path. Real catalogs on both
backends, the real importer, scan and workers. Without it, POSIX paths stay
case-sensitive.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text
from support import HEAD_REVISION
from support.scan import FAST, opens_under, scan_and_hash, staging, write

from modelvault import AlreadyExistsError, DatabaseManager
from modelvault.catalog.settle import HashedFile, Outcome, settle_file
from modelvault.catalog.stamp_meta import SCAN_SOURCE
from modelvault.catalog.values import PREVIOUS_PATHS
from modelvault.db.models import Model, PendingImport, model_tags
from modelvault.migration.importer import import_legacy_data
from modelvault.migration.sample import LegacyModel, LegacyTag, system_tags, write_legacy_catalog
from modelvault.migration.worker import process_pending
from modelvault.migration.worker_files import path_problem
from modelvault.pathkey import WINDOWS, path_key, path_rules
from modelvault.scan import scan_roots

STYLE = LegacyTag(8, "style", "#ff0000")


@pytest.fixture
def windows() -> Iterator[None]:
    with path_rules(WINDOWS):
        yield


def models(db: DatabaseManager) -> dict[str, Model]:
    with db.session_scope() as s:
        return {m.path: m for m in s.scalars(select(Model))}


def legacy_row(
    legacy_id: int, file: Path, spelt: str, kind: str, *, hashed: bool = True
) -> LegacyModel:
    """The layout-1 row of a real file, its path spelt as the legacy app wrote it."""
    data, st = file.read_bytes(), file.stat()
    return LegacyModel(
        id=legacy_id,
        path=spelt,
        type=kind,
        name=file.name,
        size_bytes=st.st_size,
        hash_hex=hashlib.sha256(data).hexdigest() if hashed else "",
        created_at=st.st_mtime_ns // 1_000_000 + 1,
        mtime_ns=st.st_mtime_ns,
        updated_at=st.st_mtime_ns // 1_000_000 + 1,
    )


# -- after a migration of Windows paths, a scan knows every file -------------------------


def test_a_scan_after_migrating_windows_spelt_paths_knows_every_file(
    db: DatabaseManager, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"  # what C: leads to, here
    base = disk / "ComfyUI" / "models"
    files = {
        "checkpoint": write(base / "checkpoints" / "b.ckpt", b"checkpoint b"),
        "lora": write(base / "loras" / "a.safetensors", b"lora a"),
        "sub": write(base / "loras" / "sub" / "c.safetensors", b"lora c"),
    }
    spelt = {  # as the legacy app wrote them, three ways
        "checkpoints/b.ckpt": r"c:\ComfyUI\models\checkpoints\b.ckpt",
        "loras/a.safetensors": "C:/ComfyUI/models/loras/a.safetensors",
        "loras/sub/c.safetensors": r"\\?\C:\COMFYUI\models\loras\sub\c.safetensors",
    }
    rows = [
        legacy_row(i, base / name, path, name.split("/")[0])
        for i, (name, path) in enumerate(spelt.items(), start=1)
    ]
    legacy = write_legacy_catalog(
        tmp_path / "hikaze_mm.sqlite3",
        layout=1,
        rows=rows,
        tags=[*system_tags(), STYLE],
        links=[(2, 8)],
    )
    with path_rules(WINDOWS, drives={"C:": str(disk)}):
        imported = import_legacy_data(legacy, db)
        assert (imported.imported, imported.staged) == (3, 0)
        with opens_under(disk) as opened:
            report = scan_roots(db, [base])
        assert opened == []  # nothing hashed again
        assert (report.files_seen, report.unchanged) == (3, 3)
        assert (report.staged, report.moved, report.missing, report.maybe_moved) == (0, 0, 0, 0)
        assert staging(db) == {}  # no duplicate rows
        assert process_pending(db, settings=FAST).files_hashed == 0
        catalogued = models(db)
        assert set(catalogued) == {row.path for row in rows}  # as the user's catalog spelt them
        assert {m.sha256 for m in catalogued.values()} == set(files.values())
        found = db.find_model(r"C:\ComfyUI\Models\Loras\A.safetensors")
        assert found.sha256 == files["lora"]
        assert [t.name for t in found.tags] == ["style"]
        under = db.find_models(under=["c:/comfyui/MODELS/loras"])
        assert {m.sha256 for m in under} == {files["lora"], files["sub"]}
        assert db.find_models(under=[str(base / "loras")]) == under  # the drive's folder itself


def test_on_posix_paths_stay_case_sensitive(db: DatabaseManager, tmp_path: Path) -> None:
    root = tmp_path / "models" / "loras"
    lower = write(root / "style.safetensors", b"lower")
    upper = write(root / "Style.safetensors", b"upper")
    report, _ = scan_and_hash(db, tmp_path / "models")
    assert report.staged_new == 2
    assert report.files_skipped == 0
    assert {m.sha256 for m in models(db).values()} == {lower, upper}
    assert db.find_model(str(root / "STYLE.safetensors").replace("STYLE", "Style")).sha256 == upper
    with pytest.raises(LookupError):
        db.find_model(str(root / "STYLE.safetensors"))
    (root / "Style.safetensors").rename(root / "STYLE.safetensors")  # another file here
    again, _ = scan_and_hash(db, tmp_path / "models")
    assert (again.staged_new, again.moved) == (1, 1)  # hashed, then settled as a move


def test_names_windows_cannot_tell_apart_keep_the_first(
    windows: None, db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "models" / "loras"
    first = write(root / "Style.safetensors", b"upper")  # "S" sorts before "s"
    write(root / "style.safetensors", b"lower")
    seen: list[str] = []
    report = scan_roots(db, [tmp_path / "models"], on_change=lambda c: seen.append(c.describe()))
    assert report.staged_new == 1
    assert any("differs only in case" in line and "style.safetensors" in line for line in seen)
    process_pending(db, settings=FAST)
    assert {m.sha256 for m in models(db).values()} == {first}


# -- case-only renames -----------------------------------------------------------------


def test_a_case_only_rename_is_a_move_not_a_duplicate(
    windows: None, db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    sha = write(root / "loras" / "style.safetensors", b"style")
    other = write(root / "loras" / "ink.safetensors", b"ink")
    scan_and_hash(db, root)
    db.tag_model(sha, db.create_tag("favourite").id)
    old = str(root / "loras" / "style.safetensors")
    os.rename(old, root / "loras" / "Style.safetensors")
    with opens_under(root) as opened:
        report = scan_roots(db, [root])
    assert opened == []
    assert (report.moved, report.staged, report.unchanged, report.missing) == (1, 0, 1, 0)
    model = db.get_model(sha)
    assert model is not None
    assert (model.path, model.name) == (
        str(root / "loras" / "Style.safetensors"),
        "Style.safetensors",
    )
    assert model.meta[PREVIOUS_PATHS] == [old]
    assert [t.name for t in model.tags] == ["favourite"]
    assert staging(db) == {}
    # A folder below the root that changes case moves every file in it.
    os.rename(root / "loras", root / "Loras")
    report = scan_roots(db, [root])
    assert (report.moved, report.staged, report.missing) == (2, 0, 0)
    assert {m.path for m in models(db).values()} == {
        str(root / "Loras" / "Style.safetensors"),
        str(root / "Loras" / "ink.safetensors"),
    }
    assert db.get_model(other) is not None
    assert scan_roots(db, [root]).unchanged == 2  # and it is known from then on


@pytest.mark.posix_only("symlinks (on Windows, a privilege)")
def test_a_root_typed_in_another_case_changes_nothing(
    windows: None, db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "comfyui" / "models"
    write(root / "loras" / "a.safetensors", b"a")
    scan_and_hash(db, root)
    (tmp_path / "ComfyUI").symlink_to(tmp_path / "comfyui")  # the same folder, typed otherwise
    report = scan_roots(db, [tmp_path / "ComfyUI" / "models"])
    assert (report.unchanged, report.moved, report.staged) == (1, 0, 0)
    assert set(models(db)) == {str(root / "loras" / "a.safetensors")}


def test_a_file_renamed_in_case_and_rewritten_keeps_its_one_model(
    windows: None, db: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    old_sha = write(root / "vae" / "v.safetensors", b"version 1")
    scan_and_hash(db, root)
    os.remove(root / "vae" / "v.safetensors")
    new_sha = write(root / "vae" / "V.safetensors", b"version 2, longer")
    report, result = scan_and_hash(db, root)
    assert report.staged_changed == 1
    assert result.files_hashed == 1
    (model,) = models(db).values()
    assert (model.sha256, model.path) == (new_sha, str(root / "vae" / "V.safetensors"))
    assert model.meta["previous_sha256"] == [old_sha]
    assert staging(db) == {}


def test_the_walk_and_the_catalog_agree_on_the_order_of_keys(
    windows: None, db: DatabaseManager, tmp_path: Path
) -> None:
    # Code point order and Windows key order differ ("B" < "_" < "a" < "{" against
    # "A" < "B" < "_" < "{"): a re-scan must still pair every file with its model.
    root = tmp_path / "models"
    for name in (
        "B.ckpt",
        "_x.ckpt",
        "a.ckpt",
        "{y}.ckpt",
        "Sub/c.ckpt",
        "sub2/d.ckpt",
        "Ü/e.ckpt",
    ):
        write(root / "checkpoints" / name, name.encode())
    scan_and_hash(db, root)
    report = scan_roots(db, [root])
    assert (report.unchanged, report.staged, report.missing) == (7, 0, 0)


# -- the import ----------------------------------------------------------------------------


@pytest.mark.parametrize("hashed", [True, False])
def test_legacy_rows_under_two_spellings_of_one_file_become_one_model(
    windows: None, db: DatabaseManager, tmp_path: Path, hashed: bool
) -> None:
    file = tmp_path / "models" / "loras" / "a.safetensors"
    sha = write(file, b"lora a")
    other = str(file).replace("/loras/", "/loras/./")  # the same file, spelt otherwise
    rows = [legacy_row(1, file, str(file), "loras", hashed=hashed)]
    rows.append(dataclasses.replace(rows[0], id=2, path=other))
    legacy = write_legacy_catalog(
        tmp_path / "hikaze_mm.sqlite3",
        rows=rows,
        tags=[*system_tags(), STYLE],
        links=[(1, 2), (2, 8)],  # lora (a system tag), style
    )
    report = import_legacy_data(legacy, db)
    assert report.rows_read == 2
    assert report.duplicates == report.conflicts == 0
    process_pending(db, settings=FAST)
    (model,) = models(db).values()
    assert model.sha256 == sha
    assert {t.name for t in db.get_model(sha).tags} == {"lora", "style"}  # type: ignore[union-attr]
    assert staging(db) == {}
    again = import_legacy_data(legacy, db)  # a re-run changes nothing
    assert again.already_present == 2


def test_windows_device_names_are_refused_in_one_sentence(
    db: DatabaseManager, tmp_path: Path
) -> None:
    legacy = write_legacy_catalog(
        tmp_path / "hikaze_mm.sqlite3",
        rows=[LegacyModel(1, r"C:\models\loras\nul.safetensors", "loras", hash_hex="")],
    )
    report = import_legacy_data(legacy, db)
    assert report.failed == 1
    (row,) = staging(db).values()
    assert row.status == "failed"
    assert "names the device NUL" in (row.last_error or "")
    problem = path_problem(r"C:\models\COM1.ckpt")
    assert problem is not None
    assert "names the device COM1" in problem
    assert path_problem("/models/nul.safetensors") is None  # a plain file on POSIX
    with path_rules(WINDOWS):
        write(tmp_path / "models" / "loras" / "con.safetensors", b"a file here")
        write(tmp_path / "models" / "loras" / "ok.safetensors", b"ok")
        scan = scan_roots(db, [tmp_path / "models"])
    assert (scan.files_skipped, scan.staged_new) == (1, 1)
    assert any("names the device CON" in line for line in scan.skipped_files)


# -- spellings in the library's API ------------------------------------------------------


def test_windows_paths_are_found_in_any_spelling(db: DatabaseManager) -> None:
    sha = "a" * 64
    db.upsert_model({"sha256": sha, "path": r"C:\Models\Loras\Style.safetensors"})
    for spelling in (r"c:\models\loras\style.safetensors", "C:/Models/Loras/STYLE.safetensors"):
        assert db.find_model(spelling).sha256 == sha
        assert db.get_model_by_path(spelling) is not None
    assert [m.sha256 for m in db.find_models(under=["c:/MODELS"])] == [sha]
    assert db.find_models(under=[r"C:\Models\Lora"]) == []  # a folder, not a prefix of a name
    with pytest.raises(AlreadyExistsError, match=r"as C:\\Models\\Loras\\Style.safetensors"):
        db.upsert_model({"sha256": "b" * 64, "path": "c:/models/loras/style.safetensors"})
    db.upsert_model({"sha256": sha, "path": r"c:\models\loras\Style.safetensors", "type": "lora"})
    assert db.get_model(sha).path == r"c:\models\loras\Style.safetensors"  # type: ignore[union-attr]
    db.add_pending_import({"path": r"\\nas\share\x.ckpt"})
    with pytest.raises(AlreadyExistsError, match="staged already"):
        db.add_pending_import({"path": r"\\?\UNC\NAS\Share\X.ckpt"})


def test_settling_another_spelling_of_a_catalogued_file(db: DatabaseManager) -> None:
    sha, other = "c" * 64, "d" * 64
    db.upsert_model({"sha256": sha, "path": r"C:\Models\style.ckpt"})

    def settle(path: str, content: str, **fields: str) -> Outcome:
        item = HashedFile(sha256=content, path=path, name=path[-10:], **fields)  # type: ignore[arg-type]
        with db.session_scope(immediate=True) as s:
            return settle_file(s, item, path_is_live=lambda p: True).outcome

    assert settle("c:/models/style.ckpt", sha) is Outcome.MERGED  # not a duplicate of itself
    assert db.get_model(sha).path == r"C:\Models\style.ckpt"  # type: ignore[union-attr]
    assert settle("c:/models/style.ckpt", other) is Outcome.CONFLICT  # legacy: nothing overwritten
    assert settle(r"C:\Models\Style.ckpt", sha, source=SCAN_SOURCE) is Outcome.MOVED
    moved = db.get_model(sha)
    assert moved is not None
    assert moved.path == r"C:\Models\Style.ckpt"
    assert moved.meta[PREVIOUS_PATHS] == [r"C:\Models\style.ckpt"]
    assert settle(r"C:\MODELS\Style.ckpt", other, source=SCAN_SOURCE) is Outcome.REPLACED
    assert [m.sha256 for m in db.find_models()] == [other]


# -- the schema upgrade ------------------------------------------------------------------


def test_the_upgrade_keys_every_row_and_keeps_every_model(db: DatabaseManager) -> None:
    from alembic import command

    from modelvault.db.schema import alembic_config

    config = alembic_config()
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "v3")
    assert "path_key" not in {c["name"] for c in inspect(db.engine).get_columns("models")}
    rows = [
        ("1" * 64, "/m/Lora.safetensors", "2024-01-01 00:00:00"),
        ("2" * 64, r"C:\M\b.ckpt", "2024-01-02 00:00:00"),
        ("3" * 64, "c:/m/B.CKPT", "2024-01-01 00:00:00"),  # the same file, older: detached
    ]
    with db.engine.begin() as conn:
        for sha, path, updated in rows:
            conn.execute(
                text(
                    "INSERT INTO models (sha256, path, name, type, meta, created_at, updated_at) "
                    "VALUES (:sha, :path, 'n', 'other', '{}', :at, :at)"
                ),
                {"sha": sha, "path": path, "at": updated},
            )
        conn.execute(
            text("INSERT INTO tags (id, name, created_at) VALUES (1, 't', :at)"),
            {"at": "2024-01-01"},
        )
        for sha, _, _ in rows:
            conn.execute(text("INSERT INTO model_tags VALUES (:sha, 1)"), {"sha": sha})
        for path in (r"\\nas\share\x.ckpt", r"\\NAS\Share\X.ckpt"):
            conn.execute(
                text(
                    "INSERT INTO pending_import (path, name, type, meta, tags, status, attempts, "
                    "created_at) VALUES (:path, 'x', 'other', '{}', '[]', 'pending', 0, :at)"
                ),
                {"path": path, "at": "2024-01-01"},
            )
    assert db.init_db() == HEAD_REVISION
    with db.session_scope() as s:
        keys = dict(s.execute(select(Model.sha256, Model.path_key)).all())
        staged = sorted(s.scalars(select(PendingImport.path_key)))
        links = s.scalar(select(func.count()).select_from(model_tags))
    assert keys == {
        "1" * 64: None,  # a POSIX path is its own key
        "2" * 64: r"C:\M\B.CKPT",
        "3" * 64: "?" + "3" * 64 + ":c:/m/B.CKPT",
    }
    assert staged == [r"\\NAS\SHARE\X.CKPT"] * 2
    assert links == 3
    assert db.find_model("c:/M/b.ckpt").sha256 == "2" * 64
    assert db.find_model("3" * 8).path == "c:/m/B.CKPT"  # kept whole, found by its hash
    indexes = {ix["name"]: ix for ix in inspect(db.engine).get_indexes("models")}
    assert indexes["ix_models_path_key"]["unique"]
    # And back: the keys go, every model and link stays.
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "v3")
    assert "path_key" not in {c["name"] for c in inspect(db.engine).get_columns("pending_import")}
    with db.engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM model_tags")) == 3
        assert conn.scalar(text("SELECT count(*) FROM models")) == 3
    assert db.init_db() == HEAD_REVISION


def test_keys_are_given_by_every_writer(db: DatabaseManager) -> None:
    # The ORM keeps the key with the path; a Core INSERT without one gets it too.
    with db.session_scope(immediate=True) as s:
        s.add(Model(sha256="e" * 64, path=r"D:\X\a.ckpt", name="a"))
        s.execute(PendingImport.__table__.insert(), [{"path": r"D:\Y\b.ckpt", "name": "b"}])
    with db.session_scope(immediate=True) as s:
        model = s.get(Model, "e" * 64)
        assert model is not None
        assert model.path_key == r"D:\X\A.CKPT"
        model.path = r"D:\Z\a.ckpt"
    with db.session_scope() as s:
        assert s.scalar(select(Model.path_key)) == r"D:\Z\A.CKPT"
        assert s.scalar(select(PendingImport.path_key)) == r"D:\Y\B.CKPT"
    assert path_key(r"D:\Y\b.ckpt") == r"D:\Y\B.CKPT"
    # A POSIX path is its own key: nothing more is stored for it.
    db.upsert_model({"sha256": "f" * 64, "path": "/models/A.ckpt"})
    with db.session_scope() as s:
        assert s.scalar(select(Model.path_key).where(Model.sha256 == "f" * 64)) is None
    assert db.find_model("/models/A.ckpt").sha256 == "f" * 64
