"""Preview images: copied from the legacy images folder into the catalog's
content-addressed store, verified, never changed at the source, listed in
meta.previews, and carried to the model by the worker; on every backend."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select

from modelvault import ConfigError, DatabaseManager, ImageStoreError, Settings, ValidationError
from modelvault.cli import main
from modelvault.db.engine import is_sqlite
from modelvault.db.models import PendingImport
from modelvault.images import ImageStore, stored_name
from modelvault.legacy.images import media_file
from modelvault.migration.importer import ImportReport, import_legacy_data
from modelvault.migration.manager import MigrationManager
from modelvault.migration.sample import LegacyModel, write_legacy_catalog
from modelvault.migration.worker import process_pending

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(255, -1, -1)) * 30
OLD = b"\x89PNG\r\n\x1a\nan older preview"
CREATED_MS = 1_724_000_000_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extra(*urls: Any) -> str:
    return json.dumps({"description": "mine", "images": list(urls)})


@pytest.fixture
def catalog(db_url: str, tmp_path: Path) -> Iterator[DatabaseManager]:
    """A catalog with an image store: beside the SQLite file, or MODELVAULT_IMAGES_DIR."""
    store = None if is_sqlite(db_url) else tmp_path / "pg-images"
    db = DatabaseManager(db_url, settings=Settings(db_url=db_url, images_dir=store))
    db.init_db()
    yield db
    db.dispose()


def folder_state(folder: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry of a folder: kind, mode, size, mtime, and the hash of a regular file."""
    state: dict[str, tuple[Any, ...]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(info.st_mode):
            content: Any = sha(Path(entry.path).read_bytes())
        elif stat.S_ISLNK(info.st_mode):
            content = os.readlink(entry.path)
        else:
            content = None  # a FIFO: never read
        state[entry.name] = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino, content)
    return state


class Legacy:
    """A legacy catalog in <tmp>/legacy with its images/ folder, every kind of image URL."""

    def __init__(self, root: Path) -> None:
        self.root = root / "legacy"
        self.images = self.root / "images"
        self.images.mkdir(parents=True)
        (self.images / "model_1_1724000000_a.png").write_bytes(PNG)
        (self.images / "model_2_1724000000_b.JPG").write_bytes(JPEG)
        (self.images / "model_1_1723000000_old.png").write_bytes(OLD)  # replaced by a.png
        (self.images / "model_99_1724000000_z.png").write_bytes(OLD + b"z")  # no row 99
        (self.images / "notes.txt").write_bytes(b"the user's notes")
        (root / "outside.png").write_bytes(b"not the user's preview")
        if os.name == "posix":  # named below either way: elsewhere they are missing
            os.symlink(root / "outside.png", self.images / "escape.png")
            os.symlink(self.images / "gone.png", self.images / "dangling.png")
            os.mkfifo(self.images / "pipe.png")
        (self.images / "folder.png").mkdir()
        self.model_file = root / "models" / "b.safetensors"
        self.model_file.parent.mkdir()
        self.model_file.write_bytes(b"model b")
        rows = [
            # hashed, file gone: straight into models
            LegacyModel(1, "/gone/a.safetensors", "loras", hash_hex="a" * 64,
                        extra_json=extra("/media/model_1_1724000000_a.png")),
            # unhashed: staged, then settled by the worker
            LegacyModel(2, str(self.model_file), "checkpoints", size_bytes=7,
                        extra_json=extra("/media/model_2_1724000000_b.JPG")),
            LegacyModel(3, "/gone/c.safetensors", hash_hex="c" * 64,
                        extra_json=extra("/media/model_3_1724000000_missing.png")),
            LegacyModel(4, "/gone/d.safetensors", hash_hex="d" * 64, extra_json=extra(
                "/media/../outside.png", "/media/sub/x.png", "/media//etc/passwd",
                "/media/C:\\x.png", "/media/..\\outside.png", "/media/", "/media/.",
                "/media/escape.png", "/media/dangling.png", "/media/pipe.png",
                "/media/folder.png", "https://example.com/e.png", 42,
            )),
            # a second row naming the same image as row 1
            LegacyModel(5, "/gone/e.safetensors", hash_hex="e" * 64,
                        extra_json=extra("/media/model_1_1724000000_a.png")),
        ]  # fmt: skip
        self.path = write_legacy_catalog(self.root / "hikaze_mm.sqlite3", rows=rows)


def import_without_hanging(legacy: Path, db: DatabaseManager, **kwargs: Any) -> ImportReport:
    """Run the import in a thread, failing (not hanging) if it does not end."""
    done: list[ImportReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            done.append(import_legacy_data(legacy, db, **kwargs))
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the import hangs"
    if errors:
        raise errors[0]
    return done[0]


def meta_of(db: DatabaseManager, sha256: str) -> dict[str, Any]:
    model = db.get_model(sha256)
    assert model is not None
    return dict(model.meta)


@pytest.mark.posix_only("counts a FIFO and symlinks among the legacy images")
def test_images_are_copied_verified_and_the_source_is_untouched(
    catalog: DatabaseManager, tmp_path: Path
) -> None:
    legacy = Legacy(tmp_path)
    before = folder_state(legacy.images)
    report = import_without_hanging(legacy.path, catalog)
    store = catalog.images_dir
    assert store is not None
    assert store.is_absolute()

    assert report.images is not None
    images = report.to_dict()["images"]
    assert images == {
        "folder": str(legacy.images),
        "store": str(store),
        "copied": 3,
        "present": 1,  # row 5 names row 1's image: stored once
        "missing": 1,
        "missing_files": [{"legacy_id": 3, "file": "model_3_1724000000_missing.png"}],
        "failed": 11,  # every URL of row 4 but the remote one and the number
        "earlier": 1,
        "unreferenced": 2,
        "unreferenced_files": ["model_99_1724000000_z.png", "notes.txt"],
    }
    assert folder_state(legacy.images) == before
    assert sorted(p.name for p in store.iterdir()) == sorted(
        [f"{sha(PNG)}.png", f"{sha(JPEG)}.jpg", f"{sha(OLD)}.png"]
    )
    assert (store / f"{sha(PNG)}.png").read_bytes() == PNG
    assert (store / f"{sha(JPEG)}.jpg").read_bytes() == JPEG

    meta = meta_of(catalog, "a" * 64)
    url = "/media/model_1_1724000000_a.png"
    assert meta["images"] == [url]
    assert meta["previews"] == [{"sha256": sha(PNG), "file": f"{sha(PNG)}.png", "source": url}]
    assert catalog.preview_path(meta["previews"][0]) == store / f"{sha(PNG)}.png"
    old = "model_1_1723000000_old.png"
    assert meta["legacy"]["earlier_previews"] == [
        {"sha256": sha(OLD), "file": f"{sha(OLD)}.png", "source": f"/media/{old}"}
    ]
    assert catalog.preview_path(meta["legacy"]["earlier_previews"][0]).read_bytes() == OLD
    assert "previews" not in meta_of(catalog, "c" * 64)
    assert "previews" not in meta_of(catalog, "d" * 64)
    reasons = " ".join(w["reason"] for w in report.warnings if w["legacy_id"] == 4)
    for name in ("escape.png", "dangling.png", "pipe.png", "folder.png", "'/media/../outside.png'"):
        assert name in reasons
    assert not any("model_3_1724000000_missing.png" in w["reason"] for w in report.warnings)


def test_a_re_run_copies_nothing_and_the_worker_carries_previews(
    catalog: DatabaseManager, tmp_path: Path
) -> None:
    legacy = Legacy(tmp_path)
    before = folder_state(legacy.images)
    import_without_hanging(legacy.path, catalog)
    store = catalog.images_dir
    assert store is not None
    stored = folder_state(store)

    again = import_without_hanging(legacy.path, catalog)
    assert again.images is not None
    assert (again.images.copied, again.images.present, again.images.earlier) == (0, 4, 1)
    assert folder_state(store) == stored  # not even rewritten in place

    url = "/media/model_2_1724000000_b.JPG"
    with catalog.session_scope() as s:
        row = s.scalars(select(PendingImport).where(PendingImport.legacy_id == 2)).one()
        assert row.meta["previews"] == [
            {"sha256": sha(JPEG), "file": f"{sha(JPEG)}.jpg", "source": url}
        ]
    process_pending(catalog, workers=1)
    meta = meta_of(catalog, sha(b"model b"))
    assert meta["images"] == [url]
    assert meta["previews"] == [{"sha256": sha(JPEG), "file": f"{sha(JPEG)}.jpg", "source": url}]
    assert catalog.preview_path(meta["previews"][0]).read_bytes() == JPEG
    assert folder_state(legacy.images) == before


@pytest.mark.parametrize("policy", ["merge", "keep", "replace"])
def test_previews_of_a_merged_row_are_united(
    catalog: DatabaseManager, tmp_path: Path, policy: str
) -> None:
    model_file = tmp_path / "m.safetensors"
    model_file.write_bytes(b"same content")
    ours = {"sha256": "1" * 64, "file": "1" * 64 + ".png", "source": "/media/ours.png"}
    theirs = {"sha256": "2" * 64, "file": "2" * 64 + ".png", "source": "/media/theirs.png"}
    catalog.upsert_model(
        {"sha256": sha(b"same content"), "path": str(model_file), "meta": {"previews": [ours]}}
    )
    catalog.add_pending_import(
        {"path": str(model_file), "meta": {"previews": [theirs, ours], "note": "x"}}
    )
    report = process_pending(catalog, workers=1, policy=policy)
    assert report.to_dict()["merged"] == 1
    assert meta_of(catalog, sha(b"same content"))["previews"] == [ours, theirs]


def test_previews_follow_a_model_that_moves(catalog: DatabaseManager, tmp_path: Path) -> None:
    model_file = tmp_path / "new" / "m.safetensors"
    model_file.parent.mkdir()
    model_file.write_bytes(b"moved content")
    ours = {"sha256": "1" * 64, "file": "1" * 64, "source": "/media/ours"}
    theirs = {"sha256": "2" * 64, "file": "2" * 64 + ".webp", "source": "/media/t.webp"}
    catalog.upsert_model(
        {
            "sha256": sha(b"moved content"),
            "path": "/gone/m.safetensors",
            "meta": {"previews": [ours]},
        }
    )
    catalog.add_pending_import({"path": str(model_file), "meta": {"previews": [theirs]}})
    assert process_pending(catalog, workers=1).to_dict()["moved"] == 1
    assert meta_of(catalog, sha(b"moved content"))["previews"] == [ours, theirs]


def test_a_duplicate_adds_its_previews_to_the_model(
    catalog: DatabaseManager, tmp_path: Path
) -> None:
    first, copy = tmp_path / "a.safetensors", tmp_path / "copy.safetensors"
    first.write_bytes(b"copied content")
    copy.write_bytes(b"copied content")
    ours = {"sha256": "1" * 64, "file": "1" * 64 + ".png", "source": "/media/ours.png"}
    theirs = {"sha256": "2" * 64, "file": "2" * 64 + ".png", "source": "/media/theirs.png"}
    digest = sha(b"copied content")
    catalog.upsert_model({"sha256": digest, "path": str(first), "meta": {"previews": [ours]}})
    catalog.add_pending_import({"path": str(copy), "meta": {"previews": [theirs]}})
    assert process_pending(catalog, workers=1).to_dict()["duplicate"] == 1
    assert meta_of(catalog, digest)["previews"] == [ours, theirs]
    (row,) = catalog.get_pending_imports("duplicate")
    assert row.meta["previews"] == [theirs]  # the row keeps its own notes too


def test_a_legacy_key_named_previews_is_kept_aside(
    catalog: DatabaseManager, tmp_path: Path
) -> None:
    root = tmp_path / "legacy"
    root.mkdir()
    row = LegacyModel(1, "/gone/a", hash_hex="a" * 64, extra_json='{"previews": "mine"}')
    import_legacy_data(write_legacy_catalog(root / "hikaze_mm.sqlite3", rows=[row]), catalog)
    meta = meta_of(catalog, "a" * 64)
    assert "previews" not in meta
    assert meta["legacy"]["extra_json_shadowed"] == {"previews": "mine"}


def test_images_dir_names_another_folder(catalog: DatabaseManager, tmp_path: Path) -> None:
    elsewhere = tmp_path / "copied-images"
    elsewhere.mkdir()
    (elsewhere / "p.WebP").write_bytes(PNG)
    root = tmp_path / "legacy"
    root.mkdir()
    rows = [LegacyModel(1, "/gone/a", hash_hex="a" * 64, extra_json=extra("/media/p.WebP"))]
    legacy = write_legacy_catalog(root / "hikaze_mm.sqlite3", rows=rows)
    report = import_legacy_data(legacy, catalog, images_dir=elsewhere)
    assert report.images is not None
    assert report.images.copied == 1
    assert meta_of(catalog, "a" * 64)["previews"][0]["file"] == f"{sha(PNG)}.webp"
    with pytest.raises(ValidationError, match="does not exist or is not a folder"):
        import_legacy_data(legacy, catalog, images_dir=tmp_path / "nowhere")


def test_the_manager_passes_images_dir_on(catalog: DatabaseManager, tmp_path: Path) -> None:
    legacy = Legacy(tmp_path)
    elsewhere = tmp_path / "copied-images"
    os.rename(legacy.images, elsewhere)
    manager = MigrationManager(catalog)
    assert manager.start_full_migration(legacy.path, workers=1, images_dir=elsewhere)
    assert manager.wait(120)
    status = manager.status().to_dict()
    assert status["state"] == "done", status
    assert meta_of(catalog, sha(b"model b"))["previews"][0]["sha256"] == sha(JPEG)


def test_a_catalog_without_a_store_refuses_images_before_writing(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if is_sqlite(db_url):
        db_url = "sqlite://"  # in memory: no folder to keep images beside
    db = DatabaseManager(db_url, settings=Settings(db_url=db_url))
    assert db.images_dir is None
    legacy = Legacy(tmp_path)
    with pytest.raises(ConfigError, match="MODELVAULT_IMAGES_DIR"):
        import_legacy_data(legacy.path, db)
    assert inspect(db.engine).get_table_names() == []
    with pytest.raises(ConfigError, match="no image store"):
        db.preview_path("a" * 64 + ".png")
    db.dispose()
    monkeypatch.setenv("MODELVAULT_IMAGES_DIR", str(tmp_path / "store"))
    assert DatabaseManager(db_url).images_dir == tmp_path / "store"


def test_the_store_may_not_be_the_legacy_folder(tmp_path: Path) -> None:
    legacy = Legacy(tmp_path)
    db = DatabaseManager(legacy.root / "catalog.sqlite3")  # its images/ is the legacy one
    with pytest.raises(ConfigError, match="only ever read"):
        import_legacy_data(legacy.path, db)
    assert not (legacy.root / "catalog.sqlite3").exists()
    db.dispose()


def test_an_unwritable_store_stops_with_one_sentence(tmp_path: Path) -> None:
    legacy = Legacy(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = Settings(db_url="sqlite://", images_dir=blocker / "images")
    db = DatabaseManager(tmp_path / "c.sqlite3", settings=settings)
    with pytest.raises(ImageStoreError, match=r"the image store .* failed while writing"):
        import_legacy_data(legacy.path, db)
    db.dispose()


@pytest.mark.posix_only("a file size limit (resource.RLIMIT_FSIZE and SIGXFSZ)")
def test_a_write_that_fails_half_way_leaves_nothing(tmp_path: Path) -> None:
    """A real short write: the file size limit stands in for a full disk."""
    source = tmp_path / "big.png"
    source.write_bytes(PNG * 40)
    store = tmp_path / "store"
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from modelvault.images import ImageStore\n"
        "from modelvault.errors import ImageStoreError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    ImageStore(sys.argv[2]).add(Path(sys.argv[1]))\n"
        "except ImageStoreError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(source), str(store)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 3, run.stderr
    assert run.stdout.startswith(f"the image store {store} failed while writing")
    assert run.stdout.count("\n") == 1
    assert list(store.iterdir()) == []  # the temporary file is gone


def test_a_damaged_stored_copy_is_written_again(tmp_path: Path) -> None:
    source = tmp_path / "a.PNG"
    source.write_bytes(PNG)
    store = ImageStore(tmp_path / "store")
    first = store.add(source)
    assert first.copied
    assert first.file == f"{sha(PNG)}.png"
    (store.folder / first.file).write_bytes(b"bit rot")
    assert store.add(source).copied
    assert (store.folder / first.file).read_bytes() == PNG
    assert not store.add(source).copied


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/media/model_1_2_x.png", "model_1_2_x.png"),
        ("/media/a b.png", "a b.png"),
        ("/other/x.png", None),
        ("https://h/media/x.png", None),
        (None, None),
    ],
)
def test_media_urls_name_plain_files(url: Any, name: str | None) -> None:
    assert media_file(url) == name


@pytest.mark.parametrize(
    "url",
    ["/media/", "/media/..", "/media/.", "/media/a/b", "/media/a\\b", "/media/c:x", "/media/\0"],
)
def test_media_urls_that_escape_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        media_file(url)


def test_store_names_take_a_clean_extension() -> None:
    digest = "f" * 64
    assert stored_name(digest, "A.JPG") == f"{digest}.jpg"
    assert stored_name(digest, "a.tar.GZ") == f"{digest}.gz"
    assert stored_name(digest, "noext") == digest
    assert stored_name(digest, "a.p$ng") == digest
    assert stored_name(digest, "a.verylongextension") == digest


def test_images_dir_of_each_kind_of_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DatabaseManager(tmp_path / "c.sqlite3").images_dir == tmp_path / "images"
    assert DatabaseManager("sqlite://").images_dir is None
    monkeypatch.setenv("MODELVAULT_IMAGES_DIR", str(tmp_path / "store"))
    assert DatabaseManager("sqlite://").images_dir == tmp_path / "store"
    db = DatabaseManager(tmp_path / "c.sqlite3")
    assert db.images_dir == tmp_path / "store"
    assert db.preview_path({"file": "a" * 64 + ".png"}) == tmp_path / "store" / ("a" * 64 + ".png")
    for bad in ("../x", "a" * 64 + "/../../x", {"file": None}, "b" * 63):
        with pytest.raises(ValidationError):
            db.preview_path(bad)  # type: ignore[arg-type]
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MODELVAULT_IMAGES_DIR", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match=r"^MODELVAULT_IMAGES_DIR: images_dir .* not a folder"):
        Settings.from_env()


@pytest.mark.posix_only("counts a FIFO and symlinks among the legacy images")
def test_the_command_copies_and_reports_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = Legacy(tmp_path)
    catalog = tmp_path / "catalog.sqlite3"
    assert main(["import", str(legacy.path), "--db", str(catalog)]) == 0
    out = capsys.readouterr().out
    assert "preview images: 3 copied, 1 already stored, 1 missing, 11 not copied" in out
    assert "1 earlier preview kept with their models" in out
    assert f"2 files no row names left in {legacy.images}" in out
    elsewhere = tmp_path / "moved-images"
    os.rename(legacy.images, elsewhere)
    argv = ["migrate", str(legacy.path), "--db", str(catalog), "--images", str(elsewhere)]
    assert main([*argv, "--json"]) == 0
    images = json.loads(capsys.readouterr().out)["import"]["images"]
    assert (images["copied"], images["present"], images["folder"]) == (0, 4, str(elsewhere))


def test_the_command_refuses_a_bad_images_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = Legacy(tmp_path)
    catalog = tmp_path / "catalog.sqlite3"
    code = main(["import", str(legacy.path), "--db", str(catalog), "--images", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "does not exist or is not a folder" in err
    assert not catalog.exists()
    code = main(["import", str(legacy.path), "--db", "sqlite://"])
    assert code == 2
    assert "MODELVAULT_IMAGES_DIR" in capsys.readouterr().err


def test_show_gives_the_stored_preview_files_of_a_read_only_catalog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = Legacy(tmp_path)
    catalog = tmp_path / "catalog.sqlite3"
    assert main(["import", str(legacy.path), "--db", str(catalog), "-q"]) == 0
    capsys.readouterr()
    stored = tmp_path / "images" / (hashlib.sha256(PNG).hexdigest() + ".png")
    assert DatabaseManager(str(catalog), read_only=True).images_dir == tmp_path / "images"
    assert main(["show", "a" * 64, "--db", str(catalog), "--json"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["preview_files"] == [str(stored)]
    assert main(["show", "a" * 64, "--db", str(catalog)]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"^previews +" + re.escape(str(stored)) + "$", shown, re.M), shown
    assert re.search(r"^image URLs +/media/model_1_1724000000_a.png$", shown, re.M), shown
