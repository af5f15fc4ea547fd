"""The DatabaseManager CRUD facade, on every backend."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support import HEAD_REVISION

from modelvault import (
    AlreadyExistsError,
    CatalogError,
    ConfigError,
    DatabaseManager,
    NotFoundError,
    ValidationError,
)
from modelvault.db.models import Model, PendingImport, Tag, model_tags

SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4


def counts(db: DatabaseManager) -> tuple[int, int, int, int]:
    with db.session_scope() as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(t))
            for t in (Model.__table__, Tag.__table__, model_tags, PendingImport.__table__)
        )


def test_upsert_inserts_then_updates_given_fields(db: DatabaseManager) -> None:
    created = db.upsert_model(
        {"sha256": SHA_A.upper(), "path": "/m/a.safetensors", "type": "LoRA", "meta": {"x": 1}}
    )
    assert created.sha256 == SHA_A
    assert (created.name, created.type, created.meta) == ("a.safetensors", "lora", {"x": 1})
    assert created.created_at.tzinfo is not None
    updated = db.upsert_model({"sha256": SHA_A, "base": "SDXL", "size_bytes": 10})
    assert (updated.base, updated.size_bytes, updated.path, updated.type) == (
        "SDXL",
        10,
        "/m/a.safetensors",
        "lora",
    )
    assert updated.updated_at >= created.updated_at
    assert db.get_model(SHA_A) == updated
    assert db.get_model_by_path("/m/a.safetensors") == updated
    assert db.get_model(SHA_B) is None
    assert db.get_model_by_path("/nowhere") is None


def test_records_stay_usable_after_the_session(db: DatabaseManager) -> None:
    db.upsert_model({"sha256": SHA_A, "path": "/m/a", "tags": [{"name": "Red", "color": "RED"}]})
    record = db.get_model(SHA_A)
    db.dispose()
    assert record is not None
    assert [(t.name, t.color) for t in record.tags] == [("red", "#ff0000")]
    assert record.created_at.tzinfo == timezone.utc
    assert record.to_dict()["tags"][0]["name"] == "red"


def test_a_path_cannot_change_hands_silently(db: DatabaseManager) -> None:
    db.upsert_model({"sha256": SHA_A, "path": "/m/a"})
    with pytest.raises(AlreadyExistsError, match=f"/m/a is catalogued already.*{SHA_A}"):
        db.upsert_model({"sha256": SHA_B, "path": "/m/a"})
    assert db.get_model(SHA_B) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sha256": "abc", "path": "/x"}, "not a SHA-256"),
        ({"sha256": None, "path": "/x"}, "not a SHA-256"),
        ({"sha256": SHA_A}, "not a path"),
        ({"sha256": SHA_A, "path": "  "}, "not a path"),
        ({"sha256": SHA_A, "path": "/x", "size_bytes": -1}, "size_bytes -1"),
        ({"sha256": SHA_A, "path": "/x", "meta": [1]}, "meta must be a JSON object"),
        ({"sha256": SHA_A, "path": "/x", "meta": {"x": float("nan")}}, "cannot be stored as JSON"),
        ({"sha256": SHA_A, "path": "/x", "meta": {"x": object()}}, "cannot be stored as JSON"),
        ({"sha256": SHA_A, "path": "/x", "size_bytes": 2**70}, "from 0 to"),
        ({"sha256": SHA_A, "path": "/x", "colour": "red"}, "unknown model field"),
        ({"sha256": SHA_A, "path": "/x", "tags": [""]}, "not a tag name"),
        ({"sha256": SHA_A, "path": "/x", "tags": [{"name": "t", "color": "blurple"}]}, "colour"),
    ],
)
def test_bad_models_are_refused_and_nothing_is_written(
    db: DatabaseManager, data: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        db.upsert_model(data)
    assert counts(db) == (0, 0, 0, 0)


def test_tags_are_trimmed_lower_case_unique_with_normal_colours(db: DatabaseManager) -> None:
    tag = db.create_tag("  Style Art ", "#ABC")
    assert (tag.name, tag.color) == ("style art", "#aabbcc")
    assert db.get_tag("STYLE ART") == tag
    assert db.create_tag("plain").color is None
    assert db.create_tag("css", "RebeccaPurple").color == "#663399"
    assert db.create_tag("css rgb", "rgb(1, 2, 3)").color == "#010203"
    with pytest.raises(AlreadyExistsError, match="'style art' exists already"):
        db.create_tag("style art", "#000000")
    for name, color, message in [
        ("", None, "not a tag name"),
        ("   ", None, "not a tag name"),
        ("x" * 300, None, "300 characters"),
        ("bad", "#12", "not a colour"),
        ("bad", "rgb(1,2)", "not a colour"),
    ]:
        with pytest.raises(ValidationError, match=message):
            db.create_tag(name, color)
    assert db.get_tag("bad") is None
    assert [t.name for t, _ in db.list_tags()] == ["css", "css rgb", "plain", "style art"]


def test_tagging_and_untagging(db: DatabaseManager) -> None:
    db.upsert_model({"sha256": SHA_A, "path": "/m/a"})
    db.upsert_model({"sha256": SHA_B, "path": "/m/b"})
    tag = db.create_tag("fav", "#00ff00")
    db.tag_model(SHA_A, tag.id)
    db.tag_model(SHA_A, tag.id)  # idempotent
    db.tag_model(SHA_B, tag.id)
    assert [t.name for t in db.get_tags_for_model(SHA_A)] == ["fav"]
    assert [m.path for m in db.get_models_by_tag("FAV")] == ["/m/a", "/m/b"]
    assert {t.name: n for t, n in db.list_tags()} == {"fav": 2}
    assert db.untag_model(SHA_A, tag.id) is True
    assert db.untag_model(SHA_A, tag.id) is False
    assert db.get_tags_for_model(SHA_A) == []
    assert db.get_models_by_tag("nothing") == []


def test_tagging_unknown_things_is_refused(db: DatabaseManager) -> None:
    tag = db.create_tag("fav")
    with pytest.raises(NotFoundError, match="no model with sha256"):
        db.tag_model(SHA_A, tag.id)
    db.upsert_model({"sha256": SHA_A, "path": "/m/a"})
    with pytest.raises(NotFoundError, match="no tag with id 999"):
        db.tag_model(SHA_A, 999)
    with pytest.raises(NotFoundError, match="no model"):
        db.get_tags_for_model(SHA_B)
    with pytest.raises(ValidationError):
        db.tag_model("zz", tag.id)
    assert counts(db)[2] == 0


def test_deleting_a_model_cascades_to_its_links(db: DatabaseManager) -> None:
    db.upsert_model({"sha256": SHA_A, "path": "/m/a", "tags": ["one", "two"]})
    with db.session_scope() as s:
        s.delete(s.get(Model, SHA_A))
    assert counts(db) == (0, 2, 0, 0)


def test_pending_imports(db: DatabaseManager) -> None:
    row = db.add_pending_import(
        {
            "path": "C:\\models\\b.ckpt",
            "type": "Checkpoint",
            "legacy_id": 7,
            "tags": ["a", {"name": "B", "color": "#FFF"}],
            "meta": {"legacy": {"id": 7}},
        }
    )
    assert (row.name, row.type, row.status, row.attempts) == ("b.ckpt", "checkpoint", "pending", 0)
    assert row.tags == [{"name": "a", "color": None}, {"name": "b", "color": "#ffffff"}]
    db.add_pending_import({"path": "/m/c", "status": "missing"})
    with pytest.raises(AlreadyExistsError, match="staged already"):
        db.add_pending_import({"path": "/m/c"})
    with pytest.raises(ValidationError, match="not a staging status"):
        db.add_pending_import({"path": "/m/d", "status": "lost"})
    with pytest.raises(ValidationError, match="unknown staging field"):
        db.add_pending_import({"path": "/m/d", "hash": "x"})
    with pytest.raises(ValidationError, match="timezone-aware"):
        db.add_pending_import({"path": "/m/d", "created_at": datetime(2024, 1, 1)})
    with pytest.raises(ValidationError, match="legacy_id 'abc'"):
        db.add_pending_import({"path": "/m/d", "legacy_id": "abc"})
    with pytest.raises(ValidationError, match="attempts -3"):
        db.add_pending_import({"path": "/m/d", "attempts": -3})
    assert [r.path for r in db.get_pending_imports()] == ["C:\\models\\b.ckpt", "/m/c"]
    assert [r.path for r in db.get_pending_imports("missing")] == ["/m/c"]
    assert [r.path for r in db.get_pending_imports(["pending", "missing"], limit=1)] == [
        "C:\\models\\b.ckpt"
    ]
    with pytest.raises(ValidationError):
        db.get_pending_imports("lost")
    assert db.remove_pending_import("/m/c") is True
    assert db.remove_pending_import("/m/c") is False
    assert counts(db)[3] == 1


def test_session_scope_rolls_back_on_error(db: DatabaseManager) -> None:
    def add_then_fail() -> None:
        with db.session_scope() as s:
            s.add(Tag(name="temp"))
            s.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        add_then_fail()
    assert db.get_tag("temp") is None


def test_manager_accepts_url_path_and_engine(tmp_path: Path) -> None:
    by_path = DatabaseManager(tmp_path / "a.sqlite3")
    by_path.init_db()
    by_url = DatabaseManager(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    assert by_url.current_revision() == HEAD_REVISION
    by_engine = DatabaseManager(by_url.engine)
    assert by_engine.current_revision() == HEAD_REVISION
    by_engine.dispose()  # not ours: the engine stays usable
    assert by_url.current_revision() == HEAD_REVISION
    default = DatabaseManager()
    default.init_db()
    assert (tmp_path / "xdg-data" / "modelvault" / "modelvault.sqlite3").is_file()


def test_unreachable_or_unwritable_catalogs_raise_catalog_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CatalogError, match=r"folder .*file/sub does not exist: create it first"):
        DatabaseManager(blocker / "sub" / "c.sqlite3")
    with pytest.raises(CatalogError, match=r"folder .*file is not a folder"):
        DatabaseManager(blocker / "c.sqlite3")
    not_sqlite = tmp_path / "junk.sqlite3"
    not_sqlite.write_bytes(b"x" * 4096)
    with pytest.raises(CatalogError, match=r"junk\.sqlite3 is not a SQLite database"):
        DatabaseManager(not_sqlite).init_db()
    with pytest.raises(ConfigError, match="not a database URL"):
        DatabaseManager("::not a url::/x://")
    with pytest.raises(ConfigError, match="no database driver"):
        DatabaseManager("nosuchdb://host/db")
