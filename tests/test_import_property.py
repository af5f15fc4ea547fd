"""Property: any legacy content is fully accounted for, on every backend.

Hypothesis writes random legacy catalogs (both layouts, hashes of every odd
kind, names and types of any length, JSON or not, tags whose names and colours
may be junk, links that point nowhere, files that exist or not) into catalogs
that may already hold models and tags, under each conflict policy, and checks,
against rules written out here independently of the importer, that every row
ends in exactly one place with its hash, notes and tags, that no note or colour
is lost, that the report adds up, and that a second run changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from support.legacy import empty_catalog, snapshot

from modelvault import DatabaseManager, Settings
from modelvault.catalog.values import file_name
from modelvault.db.models import Model, PendingImport, Tag, model_tags
from modelvault.migration.importer import import_legacy_data
from modelvault.migration.sample import LegacyModel, LegacyTag, write_legacy_catalog
from modelvault.normalize import model_type_for_folder, parse_color, parse_sha256, read_color
from modelvault.pathkey import reserved_device

HASHES = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4)]  # the 4th: catalog only
TYPES = [
    "checkpoint",
    "lora",
    "LoRA",
    "vae",
    "other",
    "",
    "  Embedding ",
    "loras",
    "Upscale_Models",
]
COLOURS = [
    *("#fff", "#ABCDEF", "#a1b2c3", "red", "RebeccaPurple", "", "  ", "junk", None),
    *("rgb(171, 205, 239)", "rgba(255, 0, 0, 0.5)", "#ff000080", "hsl(120 100% 50%)"),
]
CATALOG_TAGS = {"fav": "#00ff00", "lora": None, "red": "#ff0000", "pre": "#123456"}
RESERVED = ("legacy", "previous_paths")
LIVE_BYTES = b"live"
LIVE_MTIME_MS = 1_700_000_000_000  # when every live file was last written
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999
LIVE_MTIME_NS = LIVE_MTIME_MS * 1_000_000 + 456_789
MAX_TYPE, MAX_NAME = 64, 512

# Any text SQLite can hold as UTF-8 (no lone surrogates), NUL included.
texts = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(["a\x00b", "\x00"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
# Few hashes, often usable, so rows meet each other and the catalog's models.
usable_hashes = st.sampled_from(HASHES[:3]).flatmap(
    lambda h: st.sampled_from([h, h.upper(), f" {h}\n"])
)
hash_values = st.one_of(
    usable_hashes,
    usable_hashes,
    usable_hashes,
    st.just(""),
    st.none(),
    st.text("0123456789abcdefABCDEF", min_size=1, max_size=12),  # AutoV2 and friends
    texts,
)
extra_json = st.one_of(
    st.none(),
    st.dictionaries(
        texts | st.sampled_from([*RESERVED, "description"]), json_values, max_size=4
    ).map(json.dumps),
    json_values.map(json.dumps),
    texts,
)
tag_names = st.sampled_from(["lora", "LORA", " fav ", "Red", "red", "pre", "x" * 201]) | texts
# Beyond the column widths (type 64, name 512), in lower case too.
long_types = st.text("abcXYZ _", min_size=60, max_size=80)
long_names = st.text("abc", min_size=505, max_size=520)


@st.composite
def legacy_content(draw: st.DrawFn) -> dict[str, Any]:
    layout = draw(st.sampled_from([1, 2]))
    ids = draw(st.lists(st.integers(1, 60), min_size=1, max_size=10, unique=True))
    rows, where = [], {}
    for i in sorted(ids):
        stem = draw(texts)
        where[i] = draw(st.sampled_from(["posix", "windows", "live", "live"]))
        path = {"posix": f"/nonexistent-hyp/{i}/{stem}", "windows": f"D:\\hyp\\{i}\\{stem}"}
        live = where[i] == "live"
        rows.append(
            LegacyModel(
                id=i,
                path=path.get(where[i], ""),  # a live file's path is known once written
                type=draw(st.sampled_from(TYPES) | texts | long_types),
                name=draw(st.none() | texts | long_names),
                size_bytes=draw(
                    st.sampled_from([None, len(LIVE_BYTES), len(LIVE_BYTES) + 1])
                    if live
                    else st.none() | st.integers(0, 2**40)
                ),
                hash_hex=draw(hash_values),
                created_at=draw(
                    # at, just before or after the file's last write, or anything
                    st.sampled_from([LIVE_MTIME_MS, LIVE_MTIME_MS - 1, LIVE_MTIME_MS + 1])
                    | st.integers(-(2**41), 2**44)
                    | st.just(10**17)
                ),
                meta_json=draw(st.none() | json_values.map(json.dumps) | texts),
                extra_json=draw(extra_json),
                mtime_ns=draw(
                    st.none()
                    | st.sampled_from([LIVE_MTIME_NS, LIVE_MTIME_NS + 1])
                    | st.integers(0, 2**62)
                ),
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
    # What the catalog holds before: models (at a legacy row's path, at a path that
    # is gone, or at a file that exists) and tags, some with colours.
    others = [("gone", 0), ("gone", 1), ("live", 0)]
    targets = st.sampled_from(others) | st.sampled_from([("row", i) for i in ids] or others)
    held = draw(st.lists(targets, max_size=4, unique=True))
    hashes = draw(st.permutations(range(4)))
    catalog_models = list(zip(hashes, held, strict=False))
    catalog_tags = draw(st.lists(st.sampled_from(sorted(CATALOG_TAGS)), min_size=1, unique=True))
    policy = draw(st.sampled_from(["merge", "keep", "replace"]))
    return {
        "layout": layout,
        "rows": rows,
        "where": where,
        "tags": tags,
        "links": links,
        "catalog_models": catalog_models,
        "catalog_tags": catalog_tags,
        "policy": policy,
    }


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


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd")


def _catalog(db: DatabaseManager, policy: str, batch: int) -> DatabaseManager:
    """The same catalog, with this policy and import batch size."""
    return DatabaseManager(
        db.engine,
        settings=Settings(db_url="sqlite://", conflict_policy=policy, import_batch_size=batch),
    )


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=legacy_content())
def test_any_legacy_content_is_fully_accounted_for(
    db: DatabaseManager, content: dict[str, Any]
) -> None:
    empty_catalog(db)
    with tempfile.TemporaryDirectory() as folder:
        rows = _place_files(Path(folder), content)
        catalog_paths = _fill_catalog(db, Path(folder), content)
        path = write_legacy_catalog(
            Path(folder) / "hikaze_mm.sqlite3",
            layout=content["layout"],
            rows=rows,
            tags=content["tags"],
            links=content["links"],
            hash_not_null=False,
        )
        report = import_legacy_data(path, _catalog(db, content["policy"], 3))
        _check(db, content, rows, catalog_paths, report.to_dict())
        before = snapshot(db)
        rerun = import_legacy_data(path, _catalog(db, content["policy"], 4))
        assert snapshot(db) == before
        assert rerun.already_present == rerun.rows_read == len(rows)


def _place_files(folder: Path, content: dict[str, Any]) -> list[LegacyModel]:
    """The rows with the paths of their live files, which are written."""
    rows = []
    for row in content["rows"]:
        if content["where"][row.id] == "live":
            live = folder / "live" / f"{row.id}.bin"
            live.parent.mkdir(exist_ok=True)
            live.write_bytes(LIVE_BYTES)
            os.utime(live, ns=(LIVE_MTIME_NS, LIVE_MTIME_NS))
            row = dataclasses.replace(row, path=str(live))
        rows.append(row)
    return rows


def _fill_catalog(db: DatabaseManager, folder: Path, content: dict[str, Any]) -> dict[str, str]:
    """Models and tags the user had before the import; returns {sha256: path}."""
    for name in content["catalog_tags"]:
        db.create_tag(name, CATALOG_TAGS[name])
    rows = {row.id: row for row in content["rows"]}
    paths = {}
    for index, (kind, key) in content["catalog_models"]:
        if kind == "row":
            path = _clean(rows[key].path)
            if content["where"][key] == "live":
                path = str(folder / "live" / f"{key}.bin")
        elif kind == "gone":
            path = f"/nonexistent-hyp/catalog/{key}"
        else:
            path = str(folder / "catalog" / f"{key}.bin")
            Path(path).parent.mkdir(exist_ok=True)
            Path(path).write_bytes(b"catalogued")
        sha = HASHES[index]
        db.upsert_model(
            {"sha256": sha, "path": path, "name": "catalogued", "type": "checkpoint",
             "tags": ["pre"], "meta": {"description": f"catalog {index}", "catalog": index}}
        )  # fmt: skip
        paths[sha] = path
    return paths


@dataclass
class _Expected:
    """Where each row should be, simulated in legacy id order."""

    model_at: dict[str, str]  # path -> sha256 of the models the catalog holds
    place: dict[int, str] = field(default_factory=dict)  # legacy id -> outcome
    counts: dict[str, int] = field(default_factory=dict)
    links: dict[str, set[str]] = field(default_factory=dict)

    def put(self, row_id: int, outcome: str) -> None:
        self.place[row_id] = outcome
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


def _usable(row: LegacyModel, layout: int) -> str | None:
    usable = parse_sha256(row.hash_hex)
    if layout == 1 and row.hash_algo.lower() != "sha256":
        return None
    if usable is None or not os.path.exists(row.path):
        return usable  # a gone file keeps its legacy hash
    # A live file's hash counts only if the file provably did not change since.
    if row.size_bytes != len(LIVE_BYTES):
        return None
    if layout == 1:
        return usable if row.mtime_ns == LIVE_MTIME_NS else None
    # ...and layout 2's created_at, a time (years 1 to 9999), is at or after its last write.
    return usable if LIVE_MTIME_MS <= row.created_at <= MAX_TIME_MS else None


def _simulate(content: dict[str, Any], rows: list[LegacyModel], catalog: dict[str, str]) -> Any:
    tags = {t.id: t for t in content["tags"]}
    expected = _Expected(model_at={path: sha for sha, path in catalog.items()})
    for sha in catalog:
        expected.links[sha] = {"pre"}
    for row in rows:
        usable = _usable(row, content["layout"])
        path = _clean(row.path)
        if reserved_device(path) is not None:  # a device Windows keeps: never opened
            expected.put(row.id, "failed")
            continue
        at = expected.model_at
        of = {sha: p for p, sha in at.items()}
        if path in at:
            outcome = "staged" if usable is None else "merged" if at[path] == usable else "conflict"
        elif usable is None:
            outcome = "staged"
        elif usable not in of:
            outcome = "imported"
            at[path] = usable
        elif os.path.exists(path) and not os.path.exists(of[usable]):
            outcome = "moved"
            del at[of[usable]]
            at[path] = usable
        else:
            outcome = "duplicate"
        expected.put(row.id, outcome)
        if outcome in ("imported", "merged", "moved", "duplicate"):
            assert usable is not None
            expected.links.setdefault(usable, set()).update(_wanted(row, content, tags))
    return expected


def _wanted(row: LegacyModel, content: dict[str, Any], tags: dict[int, LegacyTag]) -> list[str]:
    names = [
        name
        for m, t in sorted(content["links"])
        if m == row.id and t in tags and (name := _tag_name(tags[t].name)) is not None
    ]
    return list(dict.fromkeys(names))


def _inexact(colour: str | None) -> bool:
    """A colour the catalog can hold only with something dropped (alpha) or rounded."""
    read = read_color(colour)
    return read is not None and not read[1]


def _tag_colours(content: dict[str, Any]) -> tuple[set[int], set[int]]:
    """(ids of legacy tags whose colour is unreadable, ids whose colour gives way)."""
    readable: dict[int, str] = {}
    unreadable = set()
    for tag in content["tags"]:
        if tag.color and tag.color.strip():
            colour = parse_color(tag.color)
            if colour is None:
                unreadable.add(tag.id)
            else:
                readable[tag.id] = colour
    final = {n: CATALOG_TAGS[n] for n in content["catalog_tags"]}
    for tag in sorted(content["tags"], key=lambda t: t.id):
        name = _tag_name(tag.name)
        if name is not None and final.get(name) is None:
            final[name] = readable.get(tag.id)
    clashes = {
        t.id
        for t in content["tags"]
        if t.id in readable and (n := _tag_name(t.name)) is not None and final[n] != readable[t.id]
    }
    return unreadable, clashes


def _check(
    db: DatabaseManager,
    content: dict[str, Any],
    rows: list[LegacyModel],
    catalog: dict[str, str],
    report: dict[str, Any],
) -> None:
    expected = _simulate(content, rows, catalog)
    colours = _check_report(content, rows, report, expected)
    with db.session_scope() as s:
        models = {m.sha256: m for m in s.scalars(select(Model))}
        pending = {p.legacy_id: p for p in s.scalars(select(PendingImport))}
        links = s.execute(
            select(model_tags.c.model_sha256, Tag.name).join(Tag, Tag.id == model_tags.c.tag_id)
        ).all()
    model_at = {m.path: sha for sha, m in models.items()}
    assert model_at == expected.model_at
    assert pending.keys() == {i for i, o in expected.place.items() if o in _STAGED}

    for row in rows:
        _check_row(row, content, expected.place[row.id], models, pending, colours)

    for sha, path in catalog.items():  # the catalog's own notes are never lost either
        index = HASHES.index(sha)
        assert f"catalog {index}" in _everywhere(models[sha].meta, "description"), path
    found: dict[str, set[str]] = {}
    for sha, name in links:
        found.setdefault(sha, set()).add(name)
    assert found == {sha: names for sha, names in expected.links.items() if names}


def _check_report(
    content: dict[str, Any], rows: list[LegacyModel], report: dict[str, Any], expected: Any
) -> tuple[set[int], set[int]]:
    """The report's counts and lists; returns the ids of the legacy tags whose
    colour is unreadable, and of those whose colour gives way."""
    tags = {t.id: t for t in content["tags"]}
    ids = {r.id for r in rows}
    counts = {
        k: report[k]
        for k in ("imported", "merged", "moved", "staged", "duplicates", "conflicts", "failed")
        if report[k]
    }
    assert counts == {
        {"duplicate": "duplicates", "conflict": "conflicts"}.get(k, k): v
        for k, v in expected.counts.items()
    }
    assert report["rows_read"] == len(rows)
    for outcome in sorted(expected.counts):
        event(f"some row {outcome}")  # pytest --hypothesis-show-statistics
    if report["color_clashes"]:
        event("a colour clash")
    assert report["already_present"] == 0
    orphans = [(m, t) for m, t in content["links"] if m not in ids or t not in tags]
    assert report["orphan_links_skipped"] == len(orphans)
    unreadable, clashes = _tag_colours(content)
    assert {c["tag_id"] for c in report["unreadable_colors"]} == unreadable
    assert {c["tag_id"] for c in report["color_clashes"]} == clashes
    return unreadable, clashes


def _check_row(
    row: LegacyModel,
    content: dict[str, Any],
    outcome: str,
    models: dict[str, Model],
    pending: dict[int | None, PendingImport],
    colours: tuple[set[int], set[int]],
) -> None:
    """One legacy row where the simulation put it, with its notes, columns and tags."""
    tags = {t.id: t for t in content["tags"]}
    usable = _usable(row, content["layout"])
    if outcome in _STAGED:
        place: Model | PendingImport = pending[row.id]
        status, sha = _STAGED[outcome], (None if outcome in ("staged", "failed") else usable)
        assert (place.status, place.sha256, place.path) == (status, sha, _clean(row.path))
        assert [t["name"] for t in place.tags] == _wanted(row, content, tags)
    else:
        assert usable is not None
        place = models[usable]
    if isinstance(place, PendingImport):
        _check_notes(row, lambda key, m=place.meta: [m[key]] if key in m else [])
        legacy = place.meta["legacy"]
        _check_columns(row, place, legacy)
    else:
        # a model may have met other records of its content: every note is kept,
        # in place or under "superseded", and so is where each record came from
        _check_notes(row, lambda key, m=place.meta: _everywhere(m, key))
        (legacy,) = [
            block
            for block in _everywhere(place.meta, "legacy")
            if isinstance(block, dict) and block.get("id") == row.id
        ]
        if outcome == "imported" and "superseded" not in place.meta:
            _check_columns(row, place, legacy)  # it met no other record
    _check_legacy(row, legacy, usable)
    unreadable, clashes = colours
    carried = {t for m, t in content["links"] if m == row.id and t in tags}
    kept = {
        tags[t].name: tags[t].color
        for t in carried
        if (t in unreadable or t in clashes or _inexact(tags[t].color))
        and _tag_name(tags[t].name) is not None
    }
    assert legacy.get("tag_colors", {}) == kept


_STAGED = {
    "staged": "pending",
    "duplicate": "duplicate",
    "conflict": "conflict",
    "failed": "failed",
}


def _everywhere(meta: dict[str, Any], key: str) -> list[Any]:
    found = [meta[key]] if key in meta else []
    found += [e["meta"][key] for e in meta.get("superseded", []) if key in e["meta"]]
    return found


def _check_notes(row: LegacyModel, values_of: Any) -> None:
    _, value = _json(row.extra_json)
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in RESERVED:
                assert item in values_of(key)


def _check_columns(row: LegacyModel, place: Model | PendingImport, legacy: dict[str, Any]) -> None:
    kind = model_type_for_folder(_clean(row.type))
    path = _clean(row.path)
    file_as_type = kind == (file_name(path).strip().lower() or "other")
    kind = kind if len(kind) <= MAX_TYPE and not file_as_type else "other"
    assert place.type == kind
    assert legacy.get("type", kind) == row.type
    name = row.name if row.name is not None and row.name.strip() else file_name(path) or path
    name = _clean(name)[:MAX_NAME]
    assert place.name == name
    assert legacy.get("name", name) == (name if row.name is None else row.name)
    assert "\x00" not in place.path + place.name


def _check_legacy(row: LegacyModel, legacy: dict[str, Any], usable: str | None) -> None:
    assert (legacy["id"], legacy["created_at_ms"]) == (row.id, row.created_at)
    ok, value = _json(row.extra_json)
    if isinstance(value, dict):
        for key, item in value.items():
            if key in RESERVED:
                assert legacy["extra_json_shadowed"][key] == item
    elif ok and value is not None:
        assert legacy["extra_json"] == value
    elif not ok and row.extra_json is not None:
        assert legacy["extra_json_raw"] == row.extra_json
    ok, value = _json(row.meta_json)
    if ok:
        assert legacy["meta_json"] == value
    elif row.meta_json is not None:
        assert legacy["meta_json_raw"] == row.meta_json
    if row.hash_hex and row.hash_hex != usable:
        assert legacy["hash_hex"] == row.hash_hex
    else:
        assert "hash_hex" not in legacy
