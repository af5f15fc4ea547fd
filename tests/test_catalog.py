"""settle_file: the one rule for what happens when a hashed file meets the catalog."""

from __future__ import annotations

import pytest

from modelvault import DatabaseManager
from modelvault.catalog.settle import HashedFile, Outcome, settle_file
from modelvault.catalog.staging import PENDING_FIELDS
from modelvault.catalog.tags import TagSpec, ensure_tags
from modelvault.catalog.values import MODEL_FIELDS, with_the_rest
from modelvault.db.models import Model

SHA_A = "a" * 64
SHA_B = "b" * 64


def settle(
    db: DatabaseManager, item: HashedFile, policy: str = "merge", live: frozenset[str] = frozenset()
) -> Outcome:
    with db.session_scope() as session:
        return settle_file(session, item, policy=policy, path_is_live=live.__contains__).outcome


def tag_names(db: DatabaseManager, sha: str) -> list[str]:
    return [t.name for t in db.get_tags_for_model(sha)]


def test_new_content_becomes_a_model_with_its_tags(db: DatabaseManager) -> None:
    item = HashedFile(
        SHA_A,
        "/m/a",
        "a",
        type="lora",
        size_bytes=3,
        meta={"note": "x"},
        tags=[TagSpec("style", "#ff0000"), TagSpec("lora")],
    )
    assert settle(db, item) is Outcome.IMPORTED
    model = db.get_model(SHA_A)
    assert model is not None
    assert (model.path, model.type, model.size_bytes, model.meta) == (
        "/m/a",
        "lora",
        3,
        {"note": "x"},
    )
    assert [(t.name, t.color) for t in model.tags] == [("lora", None), ("style", "#ff0000")]


@pytest.mark.parametrize(
    ("policy", "base", "note", "name"),
    [
        ("merge", "SDXL", "mine", "a"),
        ("keep", None, "mine", "a"),
        ("replace", "SDXL", "theirs", "b"),
    ],
)
def test_same_content_same_path_follows_the_policy(
    db: DatabaseManager, policy: str, base: str | None, note: str, name: str
) -> None:
    settle(db, HashedFile(SHA_A, "/m/a", "a", meta={"note": "mine"}, tags=[TagSpec("one")]))
    again = HashedFile(
        SHA_A,
        "/m/a",
        "b",
        base="SDXL",
        meta={"note": "theirs", "extra": 1},
        tags=[TagSpec("two", "#00ff00")],
    )
    assert settle(db, again, policy) is Outcome.MERGED
    model = db.get_model(SHA_A)
    assert model is not None
    assert (model.base, model.meta["note"], model.name) == (base, note, name)
    assert tag_names(db, SHA_A) == ["one", "two"]  # tags are never dropped
    # ... nor notes: the value that gave way is kept with the path it came from.
    gave_way = {
        "merge": {"note": "theirs"},
        "keep": {"note": "theirs", "extra": 1},  # keep adds nothing to the model itself
        "replace": {"note": "mine"},
    }[policy]
    assert model.meta["superseded"] == [{"path": "/m/a", "meta": gave_way}]
    assert ("extra" in model.meta) is (policy != "keep")


def test_same_content_elsewhere_is_a_duplicate_whose_tags_are_merged(db: DatabaseManager) -> None:
    settle(db, HashedFile(SHA_A, "/m/a", "a", tags=[TagSpec("one")]))
    copy = HashedFile(SHA_A, "/copies/a", "a", tags=[TagSpec("two")])
    with db.session_scope() as session:
        settled = settle_file(session, copy, path_is_live=lambda path: True)
    assert settled.outcome is Outcome.DUPLICATE
    assert settled.reason == "same content as /m/a"
    assert db.get_model(SHA_A).path == "/m/a"  # type: ignore[union-attr]
    assert tag_names(db, SHA_A) == ["one", "two"]


def test_same_content_whose_catalogued_file_is_gone_moves(db: DatabaseManager) -> None:
    settle(db, HashedFile(SHA_A, "/old/a", "a", meta={"note": "kept"}, tags=[TagSpec("one")]))
    moved = HashedFile(SHA_A, "/new/a", "a", tags=[TagSpec("two")])
    assert settle(db, moved, live=frozenset({"/new/a"})) is Outcome.MOVED
    model = db.get_model(SHA_A)
    assert model is not None
    assert model.path == "/new/a"
    assert model.meta == {"note": "kept", "previous_paths": ["/old/a"]}
    assert tag_names(db, SHA_A) == ["one", "two"]
    assert db.get_model_by_path("/old/a") is None


def test_a_path_catalogued_with_other_content_is_a_conflict(db: DatabaseManager) -> None:
    settle(db, HashedFile(SHA_A, "/m/a", "a", tags=[TagSpec("one")]))
    with db.session_scope() as session:
        settled = settle_file(session, HashedFile(SHA_B, "/m/a", "a", tags=[TagSpec("new")]))
    assert settled.outcome is Outcome.CONFLICT
    assert settled.reason is not None
    assert SHA_A in settled.reason
    assert SHA_B in settled.reason
    assert db.get_model(SHA_B) is None
    assert db.get_tag("new") is None  # nothing written


def test_ensure_tags_fills_a_missing_colour_but_never_overwrites(db: DatabaseManager) -> None:
    with db.session_scope() as session:
        first = ensure_tags(session, [TagSpec("t"), TagSpec("u", "#111111")])
        second = ensure_tags(session, [TagSpec("t", "#222222"), TagSpec("u", "#333333")])
        assert first == second
    assert db.get_tag("t").color == "#222222"  # type: ignore[union-attr]
    assert db.get_tag("u").color == "#111111"  # type: ignore[union-attr]


def test_the_fields_a_caller_gives_are_the_tables_columns_but_the_bookkeeping() -> None:
    assert MODEL_FIELDS == (
        "sha256",
        "path",
        "name",
        "type",
        "base",
        "size_bytes",
        "mtime_ns",
        "meta",
    )
    assert "path_key" in {c.name for c in Model.__table__.columns}
    assert PENDING_FIELDS[:3] == ("path", "name", "type")
    assert not {"id", "path_key", "claimed_by", "lease_expires_at", "not_before"} & set(
        PENDING_FIELDS
    )


def test_a_column_with_no_rule_of_its_own_is_taken_as_given() -> None:
    checked = {"name": "checked"}
    given = {"name": "as given", "base": "SDXL", "unknown": 1}
    assert with_the_rest(checked, given, ("name", "base")) == {"name": "checked", "base": "SDXL"}
