"""Property: any legacy content is fully accounted for, on every backend.

Hypothesis writes random legacy catalogs (both layouts, hashes of every odd
kind, names, types, JSON or not, tags whose names and colours may be junk,
links that point nowhere) and checks, against rules written out here
independently of the importer, that every row ends in exactly one place with
its hash, notes and tags, that the report adds up, and that a second run
changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from test_importer import empty_catalog, snapshot, with_batch

from modelvault import DatabaseManager
from modelvault.db.models import Model, PendingImport, Tag, model_tags
from modelvault.migration.importer import import_legacy_data
from modelvault.migration.sample import LegacyModel, LegacyTag, write_legacy_catalog
from modelvault.normalize import parse_color, parse_sha256

HASHES = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3)]
TYPES = ["checkpoint", "lora", "LoRA", "vae", "other", "", "  Embedding "]
COLOURS = ["#fff", "#ABCDEF", "#a1b2c3", "red", "RebeccaPurple", "", "  ", "junk", None]
RESERVED = ("legacy", "previous_paths")

# Any text SQLite can hold as UTF-8 (no lone surrogates), NUL included.
texts = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(["a\x00b", "\x00"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
hash_values = st.one_of(
    st.just(""),
    st.none(),
    st.sampled_from(HASHES),
    st.sampled_from(HASHES).map(str.upper),
    st.sampled_from(HASHES).map(lambda h: f" {h}\n"),
    st.text("0123456789abcdefABCDEF", min_size=1, max_size=12),  # AutoV2 and friends
    texts,
)
extra_json = st.one_of(
    st.none(),
    st.dictionaries(texts | st.sampled_from(RESERVED), json_values, max_size=4).map(json.dumps),
    json_values.map(json.dumps),
    texts,
)
tag_names = texts | st.sampled_from(["lora", "LORA", " fav ", "x" * 201])


@st.composite
def legacy_content(draw: st.DrawFn) -> dict[str, Any]:
    layout = draw(st.sampled_from([1, 2]))
    ids = draw(st.lists(st.integers(1, 60), max_size=10, unique=True))
    rows = []
    for i in sorted(ids):
        stem = draw(texts)
        path = draw(st.sampled_from([f"/nonexistent-hyp/{i}/{stem}", f"D:\\hyp\\{i}\\{stem}"]))
        rows.append(
            LegacyModel(
                id=i,
                path=path,
                type=draw(st.sampled_from(TYPES) | texts),
                name=draw(st.none() | texts),
                size_bytes=draw(st.none() | st.integers(0, 2**40)),
                hash_hex=draw(hash_values),
                created_at=draw(st.integers(-(2**41), 2**44) | st.just(10**17)),
                meta_json=draw(st.none() | json_values.map(json.dumps) | texts),
                extra_json=draw(extra_json),
                mtime_ns=draw(st.none() | st.integers(0, 2**62)),
                hash_algo=draw(st.sampled_from(["sha256", "SHA256", "md5"])),
                updated_at=draw(st.none() | st.integers(0, 2**44)),
            )
        )
    names = draw(st.lists(tag_names, max_size=6, unique=True))
    tags = [
        LegacyTag(100 + k, name, draw(st.sampled_from(COLOURS))) for k, name in enumerate(names)
    ]
    link = st.tuples(st.sampled_from([*ids, 77]), st.sampled_from([*(t.id for t in tags), 999]))
    links = draw(st.lists(link, max_size=20, unique=True))
    return {"layout": layout, "rows": rows, "tags": tags, "links": links}


def _json(text: str | None) -> tuple[bool, Any]:
    def reject(name: str) -> Any:
        raise ValueError(name)

    if text is None:
        return False, None
    try:
        return True, json.loads(text, parse_constant=reject)
    except (ValueError, RecursionError):
        return False, None


def _tag_name(raw: str) -> str | None:
    name = raw.strip().lower()
    return name if name and len(name) <= 200 and "\x00" not in raw else None


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=legacy_content())
def test_any_legacy_content_is_fully_accounted_for(
    db: DatabaseManager, content: dict[str, Any]
) -> None:
    empty_catalog(db)
    rows: list[LegacyModel] = content["rows"]
    with tempfile.TemporaryDirectory() as folder:
        path = write_legacy_catalog(
            Path(folder) / "hikaze_mm.sqlite3",
            layout=content["layout"],
            rows=rows,
            tags=content["tags"],
            links=content["links"],
            hash_not_null=False,
        )
        report = import_legacy_data(path, with_batch(db, 3))
        _check(db, content, report.to_dict())
        before = snapshot(db)
        again = import_legacy_data(path, with_batch(db, 4))
        assert snapshot(db) == before
        assert again.already_present == again.rows_read == len(rows)


def _check(db: DatabaseManager, content: dict[str, Any], report: dict[str, Any]) -> None:
    rows: list[LegacyModel] = content["rows"]
    tags = {t.id: t for t in content["tags"]}
    ids = {r.id for r in rows}
    accounted = sum(report[k] for k in ("imported", "merged", "staged", "duplicates"))
    accounted += report["conflicts"] + report["already_present"]
    assert report["rows_read"] == accounted == len(rows)
    assert report["merged"] == report["conflicts"] == report["already_present"] == 0
    orphans = [(m, t) for m, t in content["links"] if m not in ids or t not in tags]
    assert report["orphan_links_skipped"] == len(orphans)
    unreadable = {
        t.id for t in tags.values() if t.color and t.color.strip() and parse_color(t.color) is None
    }
    assert {c["tag_id"] for c in report["unreadable_colors"]} == unreadable

    with db.session_scope() as s:
        models = {m.meta["legacy"]["id"]: m for m in s.scalars(select(Model))}
        pending = {p.legacy_id: p for p in s.scalars(select(PendingImport))}
        links = s.execute(
            select(model_tags.c.model_sha256, Tag.name).join(Tag, Tag.id == model_tags.c.tag_id)
        ).all()
    assert models.keys() | pending.keys() == ids
    assert not models.keys() & pending.keys()

    expected_links: dict[str, set[str]] = {}
    first_of: dict[str, int] = {}
    for row in rows:
        usable = parse_sha256(row.hash_hex)
        if content["layout"] == 1 and row.hash_algo.lower() != "sha256":
            usable = None
        wanted = [
            name
            for m, t in sorted(content["links"])
            if m == row.id and t in tags and (name := _tag_name(tags[t].name)) is not None
        ]
        wanted = list(dict.fromkeys(wanted))
        place: Model | PendingImport
        if usable is None:
            place = pending[row.id]
            assert (place.status, place.sha256) == ("pending", None)
        elif usable not in first_of:
            first_of[usable] = row.id
            place = models[row.id]
            assert place.sha256 == usable
            expected_links.setdefault(usable, set()).update(wanted)
        else:
            place = pending[row.id]
            assert (place.status, place.sha256) == ("duplicate", usable)
            expected_links[usable].update(wanted)
        if isinstance(place, PendingImport):
            assert [t["name"] for t in place.tags] == wanted
        _check_meta(row, place.meta)
        assert place.type == (row.type.replace("\x00", "\ufffd").strip().lower() or "other")
        assert "\x00" not in place.path + place.name
    found: dict[str, set[str]] = {}
    for sha, name in links:
        found.setdefault(sha, set()).add(name)
    assert found == {sha: names for sha, names in expected_links.items() if names}


def _check_meta(row: LegacyModel, meta: dict[str, Any]) -> None:
    legacy = meta["legacy"]
    assert (legacy["id"], legacy["created_at_ms"]) == (row.id, row.created_at)
    ok, value = _json(row.extra_json)
    if isinstance(value, dict):
        for key, item in value.items():
            if key in RESERVED:
                assert legacy["extra_json_shadowed"][key] == item
            else:
                assert meta[key] == item
    elif ok and value is not None:
        assert legacy["extra_json"] == value
    elif not ok and row.extra_json is not None:
        assert legacy["extra_json_raw"] == row.extra_json
    ok, value = _json(row.meta_json)
    if ok:
        assert legacy["meta_json"] == value
    elif row.meta_json is not None:
        assert legacy["meta_json_raw"] == row.meta_json
    if row.hash_hex and parse_sha256(row.hash_hex) != row.hash_hex:
        assert legacy["hash_hex"] == row.hash_hex
