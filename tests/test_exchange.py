"""export / import-catalog: the whole catalog out and back, byte for byte, on both
backends and between them; merged by SHA-256 under the conflict policies; and a
file that is cut short, damaged or not ours refused with nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from support.keeping import fill_catalog, run_limited, sha_of
from support.postgres import reset_postgres

from modelvault import DatabaseManager, ModelVaultError
from modelvault.config import sqlite_url
from modelvault.exchange import export_catalog
from modelvault.exchange_import import import_catalog


def counts(db: DatabaseManager) -> dict[str, int]:
    return {**db.catalog_counts(), **db.staging_counts(), "deleted": len(db.deleted_records())}


@pytest.mark.parametrize("layout", ["json", "lines"])
def test_round_trip_is_byte_identical(
    db: DatabaseManager, db_url: str, tmp_path: Path, layout: str
) -> None:
    fill_catalog(db)
    first, second = tmp_path / "first.out", tmp_path / "second.out"
    report = export_catalog(db, first, layout=layout)
    assert (report.models, report.queued, report.deleted) == (5, 3, 2)
    assert report.tags == 5  # style, unused, t0..t2
    db.dispose()
    fresh = _empty_like(db_url, tmp_path)
    imported = import_catalog(fresh, first)
    assert imported.models_added == 5
    export_catalog(fresh, second, layout=layout)
    assert second.read_bytes() == first.read_bytes()
    model = fresh.get_model(sha_of(0))
    assert model is not None
    assert [t.name for t in model.tags] == ["style", "t0"]
    assert fresh.get_tag("style").color == "#ff8800"  # type: ignore[union-attr]
    assert fresh.get_tag("unused") is not None  # a tag no model carries travels too
    fresh.dispose()


def _empty_like(db_url: str, tmp_path: Path) -> DatabaseManager:
    if db_url.startswith("sqlite"):
        fresh = DatabaseManager(sqlite_url(tmp_path / "fresh.sqlite3"))
    else:
        reset_postgres(db_url)
        fresh = DatabaseManager(db_url)
    fresh.init_db()
    return fresh


def test_sqlite_to_postgresql_and_back_loses_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pg_url: str = request.getfixturevalue("postgres_database")
    reset_postgres(pg_url)
    lite = DatabaseManager(sqlite_url(tmp_path / "a.sqlite3"))
    lite.init_db()
    fill_catalog(lite)
    export_catalog(lite, tmp_path / "a.jsonl")
    pg = DatabaseManager(pg_url)
    pg.init_db()
    import_catalog(pg, tmp_path / "a.jsonl")
    export_catalog(pg, tmp_path / "b.jsonl")
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    pg.dispose()
    lite.dispose()


def test_empty_catalog_exports_every_section(db: DatabaseManager, tmp_path: Path) -> None:
    export_catalog(db, tmp_path / "empty.json")
    document = json.loads((tmp_path / "empty.json").read_text(encoding="utf-8"))
    assert document["format"] == "modelvault-catalog"
    for section in ("tags", "models", "queued", "deleted", "images"):
        assert document[section] == []
    import_catalog(db, tmp_path / "empty.json")
    assert counts(db)["models"] == 0


@pytest.mark.parametrize(
    ("policy", "name", "color"),
    [
        ("merge", "Mine", "#111111"),
        ("keep", "Mine", "#111111"),
        ("replace", "Model 0 – ünï 模型", "#ff8800"),
    ],
)
def test_merge_by_sha256_under_each_policy(
    db: DatabaseManager, tmp_path: Path, policy: str, name: str, color: str
) -> None:
    fill_catalog(db)
    export_catalog(db, tmp_path / "x.jsonl")
    db.update_model(sha_of(0), name="Mine", note="my own note")
    db.set_tag_color("style", "#111111")
    db.remove_tags(sha_of(0), ["t0"])
    before = counts(db)
    report = import_catalog(db, tmp_path / "x.jsonl", policy=policy)
    assert report.merged == 5
    assert report.models_added == 0
    assert report.queued_present == 3
    assert report.deleted_added == 0
    assert counts(db) == {**before, "links": before["links"] + 1}  # nothing twice; t0 is back
    model = db.get_model(sha_of(0))
    assert model is not None
    assert model.name == name
    assert "t0" in [t.name for t in model.tags]  # tags are united under every policy
    assert db.get_tag("style").color == color  # type: ignore[union-attr]
    # the note that gave way is kept beside the one that stays (meta.superseded)
    notes = [model.meta["description"]]
    notes += [e["meta"].get("description") for e in model.meta.get("superseded", [])]
    assert {"my own note", "note 0\nsecond line"} <= set(notes)


def test_a_path_held_by_other_content_is_a_conflict_row(
    db: DatabaseManager, tmp_path: Path
) -> None:
    fill_catalog(db)
    export_catalog(db, tmp_path / "x.json")
    db.delete_model(sha_of(0))
    db.upsert_model({"sha256": sha_of(500), "path": "/models/m000.safetensors"})
    report = import_catalog(db, tmp_path / "x.json")
    assert report.conflicts == 1
    assert db.get_model(sha_of(500)) is not None  # nothing overwritten
    rows = db.get_pending_imports(["conflict"])
    assert any(r.path == "/models/m000.safetensors" and r.sha256 == sha_of(0) for r in rows)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda lines: lines[:-1], "truncated"),
        (lambda lines: lines[:-3] + lines[-1:], "holds"),
        (lambda lines: [*lines[:5], lines[5][: len(lines[5]) // 2] + "\n", *lines[6:]], "not JSON"),
        (lambda lines: ["hello world\n"], "not a modelvault catalog export"),
        (lambda lines: [lines[0].replace('"version":1', '"version":99'), *lines[1:]], "version 99"),
        (lambda lines: [*lines[:3], '{"model":{"sha256":"nope"}}\n', *lines[3:]], "not valid"),
        (lambda lines: [*lines[:3], '{"spell":{}}\n', *lines[3:]], "unknown kind"),
    ],
)
def test_a_damaged_or_foreign_file_is_refused_before_anything_is_written(
    db: DatabaseManager, tmp_path: Path, damage: object, said: str
) -> None:
    fill_catalog(db)
    good = tmp_path / "good.jsonl"
    export_catalog(db, good)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(damage(_lines(good))), encoding="utf-8")  # type: ignore[operator]
    db.delete_model(sha_of(0))
    before = counts(db)
    with pytest.raises(ModelVaultError, match=said) as caught:
        import_catalog(db, bad)
    assert str(bad) in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert counts(db) == before


def test_a_cut_json_document_and_bytes_that_are_not_text(
    db: DatabaseManager, tmp_path: Path
) -> None:
    fill_catalog(db)
    doc = tmp_path / "doc.json"
    export_catalog(db, doc)
    data = doc.read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(data[: len(data) - 40])
    with pytest.raises(ModelVaultError, match="cut short"):
        import_catalog(db, cut)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"format":"modelvault-catalog","layout":"lines","version":1}\n\xff\xfe\n')
    with pytest.raises(ModelVaultError, match=r"UTF-8|not JSON"):
        import_catalog(db, binary)


def test_export_never_overwrites_a_file_not_ours(db: DatabaseManager, tmp_path: Path) -> None:
    fill_catalog(db)
    precious = tmp_path / "notes.json"
    precious.write_text('{"mine": true}', encoding="utf-8")
    with pytest.raises(ModelVaultError, match="not a modelvault export"):
        export_catalog(db, precious)
    assert precious.read_text(encoding="utf-8") == '{"mine": true}'
    ours = tmp_path / "ours.json"
    export_catalog(db, ours)
    db.delete_model(sha_of(1))
    export_catalog(db, ours)  # an earlier export is replaced whole
    assert json.loads(ours.read_text(encoding="utf-8"))["end"]["models"] == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.posix_only("a file size limit (RLIMIT_FSIZE) stands for a full disk")
def test_export_to_a_full_disk_leaves_nothing(tmp_path: Path) -> None:
    catalog = tmp_path / "c.sqlite3"
    db = DatabaseManager(catalog)
    db.init_db()
    fill_catalog(db, 300)
    db.dispose()
    out = tmp_path / "out"
    out.mkdir()
    result = run_limited(65_536, "export", str(out / "x.jsonl"), "--db", str(catalog), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "cannot write" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


def test_images_travel_with_the_export(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    source = DatabaseManager(tmp_path / "a" / "c.sqlite3")
    source.init_db()
    store = source.images_dir
    assert store is not None
    store.mkdir()
    name = hashlib.sha256(b"png").hexdigest() + ".png"  # the store names a file by its content
    (store / name).write_bytes(b"png")
    (store / "notes.txt").write_text("not an image of ours", encoding="utf-8")
    fill_catalog(source)
    report = export_catalog(source, tmp_path / "x.jsonl", with_images=True)
    assert report.images == 1
    assert report.images_copied == 1
    (tmp_path / "b").mkdir()
    target = DatabaseManager(tmp_path / "b" / "c.sqlite3")
    target.init_db()
    imported = import_catalog(target, tmp_path / "x.jsonl")
    assert imported.images_copied == 1
    assert target.preview_path(name).read_bytes() == b"png"
    source.dispose()
    target.dispose()


def test_the_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelvault.cli import main

    source = tmp_path / "a.sqlite3"
    db = DatabaseManager(source)
    db.init_db()
    fill_catalog(db)
    db.dispose()
    assert main(["export", str(tmp_path / "x.jsonl"), "--db", str(source)]) == 0
    (tmp_path / "bad.jsonl").write_text("not ours\n", encoding="utf-8")
    capsys.readouterr()
    fresh = tmp_path / "b.sqlite3"
    assert main(["import-catalog", str(tmp_path / "bad.jsonl"), "--db", str(fresh)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a modelvault catalog export" in err
    assert not fresh.exists()  # refused before a catalog was made
    assert main(["import-catalog", str(tmp_path / "x.jsonl"), "--db", str(fresh)]) == 0
    assert "5 models added" in capsys.readouterr().out
