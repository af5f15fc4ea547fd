"""Curating the catalog through the library: tags, edits, deletions, copies; both backends.

Every operation is one transaction: bad input is refused with a ModelVaultError
and leaves the catalog exactly as it was (compared whole, before and after).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from modelvault import (
    AlreadyExistsError,
    DatabaseManager,
    ModelVaultError,
    NotFoundError,
    ValidationError,
)
from modelvault.catalog import curation as cu
from modelvault.db.models import DeletedRecord, Model, PendingImport

A, B, C = "aa" * 32, "bb" * 32, "cc" * 32


def snapshot(db: DatabaseManager) -> dict[str, Any]:
    """Everything a curation may change, to prove a refusal changed nothing."""
    return {
        "models": [m.to_dict() for m in db.find_models()],
        "tags": db.list_tags(),
        "queue": [r.to_dict() for r in db.get_pending_imports()],
        "deleted": db.deleted_records(),
    }


def refused(db: DatabaseManager, error: type[ModelVaultError], match: str, call: Any) -> None:
    before = snapshot(db)
    with pytest.raises(error, match=match):
        call()
    assert snapshot(db) == before


@pytest.fixture
def shelf(db: DatabaseManager, tmp_path: Path) -> DatabaseManager:
    ink = tmp_path / "ink.safetensors"
    ink.write_bytes(b"ink")
    db.upsert_model(
        {
            "sha256": A,
            "path": str(ink),
            "type": "lora",
            "tags": [{"name": "style", "color": "#3366cc"}, "fav"],
            "meta": {"description": "ink wash", "previews": [{"sha256": C, "file": "x.png"}]},
        }
    )
    db.upsert_model({"sha256": B, "path": "/m/base.safetensors", "type": "checkpoint"})
    return db


def tag_names(db: DatabaseManager, sha: str) -> list[str]:
    return [t.name for t in db.get_tags_for_model(sha)]


def updated_at(db: DatabaseManager, sha: str) -> Any:
    model = db.get_model(sha)
    assert model is not None
    return model.updated_at


def set_updated_at_long_ago(db: DatabaseManager) -> None:
    from datetime import datetime, timezone

    with db.session_scope(immediate=True) as session:
        session.execute(update(Model).values(updated_at=datetime(2000, 1, 1, tzinfo=timezone.utc)))


def test_ensure_tag_gets_or_creates(shelf: DatabaseManager) -> None:
    made = shelf.ensure_tag(" New ", "teal")
    assert (made.name, made.color) == ("new", "#008080")
    again = shelf.ensure_tag("NEW", "#ff0000")  # the library quick start, run twice
    assert again.id == made.id
    assert again.color == "#008080"  # a colour is never overwritten by get-or-create
    assert shelf.ensure_tag("fav", "red").color == "#ff0000"  # one without takes it
    refused(shelf, ValidationError, "not a tag name", lambda: shelf.ensure_tag("  "))
    refused(shelf, ValidationError, "not a colour", lambda: shelf.ensure_tag("x", "notacolour"))


def test_rename_tag_and_merge(shelf: DatabaseManager) -> None:
    set_updated_at_long_ago(shelf)
    shelf.add_pending_import({"path": "/q/one.safetensors", "tags": ["Style", "keep"]})
    change = shelf.rename_tag("style", "Painting")
    assert (change.tag.name, change.tag.color, change.models, change.queued) == (
        "painting",
        "#3366cc",
        1,
        1,
    )
    assert tag_names(shelf, A) == ["fav", "painting"]
    assert updated_at(shelf, A).year > 2000  # the model's tags read differently now
    assert updated_at(shelf, B).year == 2000
    (row,) = shelf.get_pending_imports()
    assert [t["name"] for t in row.tags] == ["painting", "keep"]  # in place
    refused(
        shelf,
        AlreadyExistsError,
        "exists already: merge",
        lambda: shelf.rename_tag("fav", "painting"),
    )
    refused(
        shelf,
        NotFoundError,
        "no tag 'nope': the tags are fav, painting",
        lambda: shelf.rename_tag("nope", "x"),
    )
    refused(
        shelf, ValidationError, "has that name already", lambda: shelf.rename_tag("fav", " FAV")
    )
    shelf.upsert_model({"sha256": C, "path": "/m/c.safetensors", "tags": ["fav"]})
    merged = shelf.rename_tag("painting", "fav", merge=True)
    assert (merged.tag.name, merged.tag.color, merged.models) == ("fav", "#3366cc", 1)
    assert [t.name for t, _ in shelf.list_tags()] == ["fav"]
    assert tag_names(shelf, A) == ["fav"]
    assert tag_names(shelf, C) == ["fav"]
    (row,) = shelf.get_pending_imports()
    assert [t["name"] for t in row.tags] == ["fav", "keep"]


def test_tag_colour_and_delete(shelf: DatabaseManager) -> None:
    assert shelf.set_tag_color("fav", "rgb(255, 136, 0)").color == "#ff8800"
    assert shelf.set_tag_color("fav", None).color is None
    refused(shelf, ValidationError, "not a colour", lambda: shelf.set_tag_color("fav", "nope"))
    refused(shelf, NotFoundError, "no tag 'gone'", lambda: shelf.set_tag_color("gone", "red"))
    shelf.add_pending_import({"path": "/q/one.safetensors", "tags": [{"name": "style"}, "x"]})
    claimed = shelf.add_pending_import({"path": "/q/two.safetensors", "tags": ["style"]})
    with shelf.session_scope(immediate=True) as session:  # a worker holds this one
        session.execute(
            update(PendingImport).where(PendingImport.id == claimed.id).values(status="claimed")
        )
    set_updated_at_long_ago(shelf)
    change = shelf.delete_tag("STYLE")
    assert (change.tag.name, change.models, change.queued) == ("style", 1, 1)
    assert tag_names(shelf, A) == ["fav"]
    assert updated_at(shelf, A).year > 2000
    assert shelf.get_tag("style") is None
    rows = {
        r.path: [t if isinstance(t, str) else t["name"] for t in r.tags]
        for r in shelf.get_pending_imports()
    }
    assert rows == {"/q/one.safetensors": ["x"], "/q/two.safetensors": ["style"]}
    refused(shelf, NotFoundError, "no tag 'style'", lambda: shelf.delete_tag("style"))


def test_tagging_and_untagging_a_model(shelf: DatabaseManager) -> None:
    set_updated_at_long_ago(shelf)
    model, added = cu.add_tags(shelf, B, ["SDXL", "fav", "sdxl", "style"], color="#00ff00")
    assert added == ["sdxl", "fav", "style"]
    assert [t.name for t in model.tags] == ["fav", "sdxl", "style"]
    colours = {t.name: t.color for t, _ in shelf.list_tags()}
    assert colours == {"sdxl": "#00ff00", "fav": "#00ff00", "style": "#3366cc"}  # kept
    assert model.updated_at.year > 2000
    set_updated_at_long_ago(shelf)
    _, added = cu.add_tags(shelf, B, ["fav"])
    assert added == []
    assert updated_at(shelf, B).year == 2000  # nothing changed, nothing said
    cu.remove_tags(shelf, B, ["style"])
    model, removed = cu.remove_tags(shelf, B, ["fav", "style"])  # style: not on it now
    assert removed == ["fav"]
    assert [t.name for t in model.tags] == ["sdxl"]
    assert shelf.get_tag("fav") is not None  # the tag stays for the others
    refused(
        shelf, NotFoundError, "no tag 'nope'", lambda: cu.remove_tags(shelf, B, ["sdxl", "nope"])
    )
    refused(shelf, ValidationError, "no tag given", lambda: cu.add_tags(shelf, B, []))
    refused(shelf, NotFoundError, "no model", lambda: shelf.add_tags("dd" * 32, ["x"]))
    assert [t.name for t in shelf.add_tags("base.safetensors", ["y"]).tags] == ["sdxl", "y"]
    assert [t.name for t in shelf.remove_tags(B[:8], ["y", "sdxl"]).tags] == []


def test_the_older_tag_calls_say_when_a_model_changed(shelf: DatabaseManager) -> None:
    tag = shelf.ensure_tag("new")
    set_updated_at_long_ago(shelf)
    shelf.tag_model(B, tag.id)
    assert updated_at(shelf, B).year > 2000
    set_updated_at_long_ago(shelf)
    shelf.tag_model(B, tag.id)  # there already
    assert updated_at(shelf, B).year == 2000
    assert shelf.untag_model(B, tag.id)
    assert updated_at(shelf, B).year > 2000


def test_update_model_fields_note_and_meta(shelf: DatabaseManager) -> None:
    set_updated_at_long_ago(shelf)
    model = shelf.update_model(A, name="Ink", type=" LoRA ", base="SDXL", note="better ink")
    assert (model.name, model.type, model.base) == ("Ink", "lora", "SDXL")
    assert model.meta["description"] == "better ink"
    assert model.meta["previews"] == [{"sha256": C, "file": "x.png"}]
    assert model.updated_at.year > 2000
    model = shelf.update_model("Ink", meta={"prompts": {"positive": "ink"}, "description": None})
    assert "description" not in model.meta
    assert model.meta["prompts"] == {"positive": "ink"}
    assert shelf.update_model(A, note="", base="").meta.get("description") is None
    assert shelf.get_model(A).base is None  # type: ignore[union-attr]
    for changes, message in [
        ({}, "nothing to change"),
        ({"name": " "}, "not a model name"),
        ({"type": ""}, "not a model type"),
        ({"type": "x" * 65}, "not a model type"),
        ({"base": 3}, "base 3 is not valid"),
        ({"note": 5}, "not a text"),
        ({"meta": {"previews": []}}, "previews are modelvault's own"),
        ({"meta": {"x": float("nan")}}, "cannot be stored as JSON"),
        ({"meta": {"description": "a"}, "note": "b"}, "note is given twice"),
    ]:
        refused(shelf, ValidationError, message, lambda c=changes: shelf.update_model(A, **c))
    refused(shelf, NotFoundError, "no model", lambda: shelf.update_model("nothing", name="x"))
    with pytest.raises(TypeError):
        shelf.update_model(A, colour="red")


def test_delete_model_keeps_its_record_and_never_a_file(shelf: DatabaseManager) -> None:
    model = shelf.get_model(A)
    assert model is not None
    gone = shelf.delete_model("ink.safetensors")
    assert gone.sha256 == A
    assert shelf.get_model(A) is None
    assert Path(model.path).read_bytes() == b"ink"  # the file is the user's
    assert {t.name for t, _ in shelf.list_tags()} == {"style", "fav"}  # tags stay
    assert shelf.get_model(B) is not None
    (entry,) = shelf.deleted_records()
    assert (entry.kind, entry.sha256, entry.path, entry.name) == (
        "model",
        A,
        model.path,
        model.name,
    )
    assert entry.record["meta"] == model.meta  # previews named here: kept in the store
    assert {(t["name"], t["color"]) for t in entry.record["tags"]} == {
        ("style", "#3366cc"),
        ("fav", None),
    }
    with shelf.session_scope() as session:
        assert session.scalar(select(DeletedRecord.record)) == entry.record
    refused(shelf, NotFoundError, "no model", lambda: shelf.delete_model(A))
    refused(shelf, NotFoundError, "no model", lambda: cu.delete_models(shelf, [B, A]))
    assert shelf.get_model(B) is not None  # all or none


def test_forget_pending_by_id_and_status(shelf: DatabaseManager) -> None:
    rows = [
        shelf.add_pending_import({"path": f"/q/{n}.safetensors", "status": status, "tags": ["t"]})
        for n, status in enumerate(["missing", "missing", "failed", "claimed", "pending"])
    ]
    refused(
        shelf,
        NotFoundError,
        "no staging row has the id 999",
        lambda: shelf.forget_pending([rows[0].id, 999]),
    )
    refused(shelf, ValidationError, "is being hashed", lambda: shelf.forget_pending([rows[3].id]))
    refused(
        shelf,
        ValidationError,
        "'claimed' is not a status",
        lambda: shelf.forget_pending(statuses=["claimed"]),
    )
    refused(shelf, ValidationError, "nothing to forget", lambda: shelf.forget_pending())
    refused(shelf, ValidationError, "not a staging row id", lambda: shelf.forget_pending([True]))
    forgotten = shelf.forget_pending([rows[2].id], statuses=["missing"])
    assert [r.id for r in forgotten] == [rows[0].id, rows[1].id, rows[2].id]
    assert [r.status for r in shelf.get_pending_imports()] == ["claimed", "pending"]
    deleted = shelf.deleted_records()
    assert [d.kind for d in deleted] == ["queued"] * 3
    assert {d.path for d in deleted} == {r.path for r in rows[:3]}
    assert deleted[0].record["tags"] == [{"name": "t", "color": None}]
    assert shelf.forget_pending(statuses=["conflict"]) == []


def test_copies_duplicates_and_queued_rows(shelf: DatabaseManager) -> None:
    for path, status, sha in [
        ("/q/ink copy.safetensors", "duplicate", A),
        ("/q/ink again.safetensors", "conflict", A),
        ("/q/lonely.safetensors", "duplicate", C),
        ("/q/c2.safetensors", "conflict", C),
        ("/q/waiting.safetensors", "pending", None),
    ]:
        shelf.add_pending_import({"path": path, "status": status, "sha256": sha})
    copies = shelf.find_copies(A.upper())
    assert copies.model is not None
    assert copies.model.sha256 == A
    assert [r.path for r in copies.queued] == [
        "/q/ink copy.safetensors",
        "/q/ink again.safetensors",
    ]
    assert copies.count == 3
    alone = shelf.find_copies(B)
    assert (alone.count, alone.queued) == (1, ())
    dupes = cu.find_duplicates(shelf)
    assert [(d.sha256, d.count, d.model is not None) for d in dupes] == [
        (A, 3, True),
        (C, 2, False),
    ]
    assert [r.path for r in cu.find_queued(shelf, "waiting.safetensors")] == [
        "/q/waiting.safetensors"
    ]
    assert [r.path for r in cu.find_queued(shelf, "/q/lonely.safetensors")] == [
        "/q/lonely.safetensors"
    ]
    assert len(cu.find_queued(shelf, C)) == 2
    assert cu.find_queued(shelf, "nothing") == []
    assert cu.known_types(shelf) == {"checkpoint": 1, "lora": 1}
