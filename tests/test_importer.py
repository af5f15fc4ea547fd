"""Stage 1, the legacy import, on every backend: every quirk of LEGACY.md, where
each row goes, what survives in meta, re-runs, crashes, and read-only access."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select
from support import statements_run
from support.legacy import (
    empty_catalog,
    models_by_legacy_id,
    pending_by_legacy_id,
    sha,
    snapshot,
    tags_of,
    with_batch,
)

from modelvault import ConfigError, DatabaseManager, LegacyDatabaseError, Settings
from modelvault.catalog.settle import HashedFile, Outcome, settle_file
from modelvault.catalog.tags import TagSpec
from modelvault.db.models import Model, PendingImport, Tag
from modelvault.migration.importer import MAX_WARNINGS, ImportReport, import_legacy_data
from modelvault.migration.sample import (
    LegacyModel,
    LegacyTag,
    hold_open_in_wal,
    system_tags,
    write_legacy_catalog,
)

CREATED_MS = 1_724_000_000_123
MTIME_NS = 1_700_000_000_000_000_000
# When the files of the quirky catalog were last written: before the legacy app saw them.
FILE_MTIME_NS = 1_600_000_000_000_000_000


# -- the quirks of LEGACY.md, one row each ---------------------------------------


@dataclass
class Quirks:
    path: Path
    layout: int
    files: dict[str, Path]
    rows: list[LegacyModel]


TAGS = [
    *system_tags(),  # ids 1-7, no colour
    LegacyTag(8, "fav", "#F80", 1_600_000_000_000),  # #rgb, upper case
    LegacyTag(9, "sky", "SkyBlue"),  # a CSS name
    LegacyTag(10, "deep", "#ABCDEF"),
    LegacyTag(11, "plain", ""),  # empty: no colour, nothing lost
    LegacyTag(12, "odd", "blurple"),  # junk
    LegacyTag(13, "green", "#0f0"),
    LegacyTag(14, "unused", "#123456"),  # on no model: still migrated
]


def quirky_legacy(folder: Path, layout: int) -> Quirks:
    files = {}
    for name, content in [
        ("kept", b"k" * 400),
        ("changed", b"c" * 300),
        ("copy1", b"same bytes"),
        ("copy2", b"same bytes"),
    ]:
        files[name] = folder / "models" / f"{name}.safetensors"
        files[name].parent.mkdir(parents=True, exist_ok=True)
        files[name].write_bytes(content)
        os.utime(files[name], ns=(FILE_MTIME_NS, FILE_MTIME_NS))
    notes = {
        "description": "my favourite style",
        "community_links": "https://civitai.com/models/1",
        "images": ["/media/model_1_1724000000_preview.png"],
        "prompts": {"positive": "a cat", "negative": "blurry"},
        "rating": 5,
    }
    rows = [
        LegacyModel(1, str(files["kept"]), "lora", "kept.safetensors", 400, sha("kept"),
                    CREATED_MS, extra_json=json.dumps(notes)),
        LegacyModel(2, "/gone/loras/gone.safetensors", "lora", "gone.safetensors", 123,
                    sha("gone")),
        LegacyModel(3, "/gone/embeddings/upper.pt", "Embedding", None, None,
                    f"  {sha('upper').upper()}\n"),
        LegacyModel(4, "/gone/empty.safetensors", "checkpoint", hash_hex=""),
        LegacyModel(5, "/gone/null.safetensors", "checkpoint", hash_hex=None),
        LegacyModel(6, "/gone/autov2.safetensors", "lora", hash_hex="A1B2C3D4E5"),
        LegacyModel(7, "/gone/junk.safetensors", "lora", hash_hex="not a hash!"),
        LegacyModel(8, str(files["changed"]), "lora", size_bytes=200, hash_hex=sha("old")),
        LegacyModel(9, "C:\\ComfyUI\\models\\checkpoints\\win.ckpt", "checkpoint",
                    hash_hex=sha("win")),
        LegacyModel(10, "/gone/badjson.safetensors", "vae", extra_json="{not json"),
        LegacyModel(11, "/gone/meta.safetensors", "upscale", hash_hex=sha("meta"),
                    meta_json='{"scanner": {"v": 1}}'),
        LegacyModel(12, str(files["copy1"]), "checkpoint", hash_hex=sha("copy"), size_bytes=10),
        LegacyModel(13, str(files["copy2"]), "checkpoint", hash_hex=sha("copy").upper(),
                    size_bytes=10, extra_json='{"description": "the copy"}'),
        LegacyModel(14, "/gone/list.safetensors", "other", extra_json="[1, 2]"),
        LegacyModel(15, "/gone/reserved.safetensors", "controlnet",
                    extra_json='{"legacy": "mine", "previous_paths": 3, "x": 1}'),
        LegacyModel(16, "/gone/repeats.safetensors", "other",
                    extra_json='{"a": 1, "a": 2, "b": 3}'),
    ]  # fmt: skip
    if layout == 1:
        rows[1] = LegacyModel(2, "/gone/loras/gone.safetensors", "lora", "gone.safetensors", 123,
                              sha("gone"), dir_path="/gone/loras", mtime_ns=MTIME_NS,
                              hash_algo="SHA256", updated_at=CREATED_MS + 5)  # fmt: skip
        rows.append(LegacyModel(17, "/gone/md5.safetensors", "lora", hash_hex=sha("md5"),
                                hash_algo="md5"))  # fmt: skip
        live = {str(file) for file in files.values()}
        rows = [replace(r, mtime_ns=FILE_MTIME_NS) if r.path in live else r for r in rows]
    links = [(row.id, 1 + ["checkpoint", "lora", "embedding", "vae", "upscale", "ultralytics",
                           "other"].index(row.type.lower())) for row in rows
             if row.type.lower() in ("checkpoint", "lora", "embedding", "vae", "upscale",
                                     "other")]  # fmt: skip
    links += [(1, 8), (1, 12), (4, 13), (4, 12), (12, 8), (13, 10), (13, 9), (3, 11)]
    links += [(999, 8), (1, 555)]  # orphans: a model and a tag that do not exist
    path = write_legacy_catalog(
        folder / "hikaze_mm.sqlite3",
        layout=layout,
        rows=rows,
        tags=TAGS,
        links=links,
        hash_not_null=False,
        leave_wal=True,  # as a killed legacy app leaves it: the rows are in the -wal only
    )
    return Quirks(path, layout, files, rows)


@pytest.fixture(params=[2, 1], ids=["layout2", "layout1"])
def quirks(request: pytest.FixtureRequest, tmp_path: Path) -> Quirks:
    return quirky_legacy(tmp_path, request.param)


@dataclass(frozen=True)
class Imported:
    """The quirky catalog imported (batches of 4): the report and the rows, by legacy id."""

    db: DatabaseManager
    quirks: Quirks
    report: ImportReport
    models: dict[int, Model]
    pending: dict[int | None, PendingImport]

    @property
    def layout1(self) -> bool:
        return self.quirks.layout == 1

    def reasons(self) -> dict[tuple[str, Any], str]:
        return {(w["table"], w["legacy_id"]): w["reason"] for w in self.report.warnings}


def report_counts_every_row_where_its_quirk_sends_it(i: Imported) -> None:
    """The report's counts add up to the rows read, and each quirk lands in the
    place it should: six models, the rest staged (one duplicate)."""
    report = i.report
    assert (report.layout, report.rows_read) == (i.quirks.layout, len(i.quirks.rows))
    assert (report.imported, report.staged, report.duplicates) == (6, 9 + i.layout1, 1)
    assert (report.merged, report.conflicts, report.already_present) == (0, 0, 0)
    assert report.accounted == report.rows_read
    assert (report.tags_created, report.orphan_links_skipped) == (14, 2)
    assert report.unreadable_colors == [{"tag_id": 12, "tag": "odd", "color": "blurple"}]
    json.dumps(report.to_dict())  # fit for JSON
    assert sorted(i.models) == [1, 2, 3, 9, 11, 12]
    assert set(i.pending) == {4, 5, 6, 7, 8, 10, 13, 14, 15, 16} | ({17} if i.layout1 else set())
    assert {p.status for legacy_id, p in i.pending.items() if legacy_id != 13} == {"pending"}


def hashes_are_trimmed_and_lower_cased_and_odd_ones_kept_in_meta(i: Imported) -> None:
    """A hash counts trimmed and lower-cased; one that does not count (not a
    SHA-256, the file changed since) is kept in meta.legacy with the reason."""
    models, pending = i.models, i.pending
    assert models[1].sha256 == sha("kept")
    assert models[3].sha256 == sha("upper")
    assert models[3].meta["legacy"]["hash_hex"] == f"  {sha('upper').upper()}\n"
    assert "hash_hex" not in models[1].meta["legacy"]
    assert pending[6].meta["legacy"]["hash_hex"] == "A1B2C3D4E5"
    assert "not a SHA-256" in pending[6].meta["legacy"]["hash_ignored"]
    assert pending[7].meta["legacy"]["hash_hex"] == "not a hash!"
    assert "hash_hex" not in pending[4].meta["legacy"]
    assert "hash_hex" not in pending[5].meta["legacy"]
    assert pending[8].meta["legacy"]["hash_hex"] == sha("old")  # the file changed since
    assert "size 200 in the legacy catalog, 300 now" in pending[8].meta["legacy"]["hash_ignored"]
    assert all(p.sha256 is None for legacy_id, p in pending.items() if legacy_id != 13)


def layout1_columns_are_kept_and_a_hash_not_sha256_is_staged(i: Imported) -> None:
    """Layout 1: hash_algo, dir_path, mtime_ns and updated_at are kept; an md5
    row is staged to be hashed. (Layout 2 has none of these.)"""
    if not i.layout1:
        pytest.skip("layout 1 only")
    models, pending = i.models, i.pending
    assert pending[17].meta["legacy"]["hash_algo"] == "md5"
    assert pending[17].meta["legacy"]["hash_hex"] == sha("md5")
    assert models[2].meta["legacy"]["hash_algo"] == "SHA256"
    assert models[2].mtime_ns == MTIME_NS
    assert models[2].meta["legacy"]["updated_at_ms"] == CREATED_MS + 5
    assert models[2].meta["legacy"]["dir_path"] == "/gone/loras"
    assert models[1].meta["legacy"]["dir_path"] == str(i.quirks.files["kept"].parent)


def the_users_notes_stay_at_the_top_and_legacy_columns_go_under_legacy(i: Imported) -> None:
    """Every key of extra_json at the top level of meta; the legacy columns, and
    extra_json that is not a plain object, under meta.legacy."""
    kept, models, pending = i.models[1], i.models, i.pending
    assert kept.meta["description"] == "my favourite style"
    assert kept.meta["prompts"] == {"positive": "a cat", "negative": "blurry"}
    assert kept.meta["images"] == ["/media/model_1_1724000000_preview.png"]
    assert (kept.meta["community_links"], kept.meta["rating"]) == (
        "https://civitai.com/models/1",
        5,
    )
    assert kept.meta["legacy"]["id"] == 1
    assert kept.meta["legacy"]["source"] == str(i.quirks.path.resolve())
    assert kept.meta["legacy"]["created_at_ms"] == CREATED_MS
    assert kept.created_at == datetime(2024, 8, 18, 16, 53, 20, 123000, tzinfo=timezone.utc)
    assert (kept.path, kept.name, kept.type, kept.size_bytes) == (
        str(i.quirks.files["kept"]), "kept.safetensors", "lora", 400)  # fmt: skip
    assert pending[10].meta["legacy"]["extra_json_raw"] == "{not json"
    assert models[11].meta["legacy"]["meta_json"] == {"scanner": {"v": 1}}
    assert pending[14].meta["legacy"]["extra_json"] == [1, 2]
    assert pending[15].meta["x"] == 1
    assert pending[15].meta["legacy"]["extra_json_shadowed"] == {
        "legacy": "mine",
        "previous_paths": 3,
    }
    assert pending[16].meta["a"] == 2
    assert pending[16].meta["b"] == 3
    assert pending[16].meta["legacy"]["extra_json_raw"] == '{"a": 1, "a": 2, "b": 3}'


def names_types_and_paths_come_from_the_row_or_its_file_name(i: Imported) -> None:
    """A missing name is the file name (a Windows one too); a type is lower-cased,
    its stored spelling kept; the source is the legacy file's real path."""
    models, pending = i.models, i.pending
    assert (models[3].name, models[3].type, models[3].meta["legacy"]["type"]) == (
        "upper.pt", "embedding", "Embedding")  # fmt: skip
    assert models[9].name == "win.ckpt"
    assert models[9].path == "C:\\ComfyUI\\models\\checkpoints\\win.ckpt"
    assert pending[4].name == "empty.safetensors"
    assert pending[4].source == str(i.quirks.path.resolve())


def tag_colours_are_normalised_and_unreadable_ones_kept_where_used(i: Imported) -> None:
    """Every legacy tag becomes a tag with its colour normalised and its legacy
    created_at; an unreadable colour is kept in the meta of the rows that carry it;
    a staging row lists its tags in legacy tag id order."""
    db, kept, pending = i.db, i.models[1], i.pending
    colours = {t.name: t.color for t, _ in db.list_tags()}
    assert colours == {
        "checkpoint": None, "lora": None, "embedding": None, "vae": None, "upscale": None,
        "ultralytics": None, "other": None, "fav": "#ff8800", "sky": "#87ceeb",
        "deep": "#abcdef", "plain": None, "odd": None, "green": "#00ff00", "unused": "#123456",
    }  # fmt: skip
    assert tags_of(db, sha("kept")) == ["fav", "lora", "odd"]
    assert kept.meta["legacy"]["tag_colors"] == {"odd": "blurple"}
    assert pending[4].tags == [  # in legacy tag id order
        {"name": "checkpoint", "color": None},
        {"name": "odd", "color": None},
        {"name": "green", "color": "#00ff00"},
    ]
    assert pending[4].meta["legacy"]["tag_colors"] == {"odd": "blurple"}
    assert tags_of(db, sha("upper")) == ["embedding", "plain"]
    with db.session_scope() as s:
        fav = s.scalar(select(Tag).where(Tag.name == "fav"))
        assert fav is not None
        assert fav.created_at == datetime(2020, 9, 13, 12, 26, 40, tzinfo=timezone.utc)


def two_rows_of_one_content_make_one_model_and_a_duplicate(i: Imported) -> None:
    """The lower id becomes the model; the other is a duplicate staging row that
    keeps its own notes, its tags merged into the model."""
    copy = i.pending[13]
    assert (copy.status, copy.sha256, copy.path) == (
        "duplicate",
        sha("copy"),
        str(i.quirks.files["copy2"]),
    )
    assert copy.last_error == f"same content as {i.quirks.files['copy1']}"
    assert copy.meta["description"] == "the copy"  # the duplicate keeps its own notes
    assert tags_of(i.db, sha("copy")) == ["checkpoint", "deep", "fav", "sky"]
    assert i.models[12].path == str(i.quirks.files["copy1"])


def warnings_name_the_row_and_the_reason(i: Imported) -> None:
    """Each warning names its table and legacy id, and says why."""
    reasons = i.reasons()
    assert "staged to be hashed" in reasons[("models", 6)]
    assert "file changed since it was hashed" in reasons[("models", 8)]
    assert "not valid JSON" in reasons[("models", 10)]
    assert reasons[("models", 13)].startswith("duplicate: same content as")
    assert "model 999, which does not exist" in reasons[("model_tags", 999)]
    assert "tag 555, which does not exist" in reasons[("model_tags", 1)]
    assert "blurple" in reasons[("tags", 12)]


QUIRK_CASES = [
    report_counts_every_row_where_its_quirk_sends_it,
    hashes_are_trimmed_and_lower_cased_and_odd_ones_kept_in_meta,
    layout1_columns_are_kept_and_a_hash_not_sha256_is_staged,
    the_users_notes_stay_at_the_top_and_legacy_columns_go_under_legacy,
    names_types_and_paths_come_from_the_row_or_its_file_name,
    tag_colours_are_normalised_and_unreadable_ones_kept_where_used,
    two_rows_of_one_content_make_one_model_and_a_duplicate,
    warnings_name_the_row_and_the_reason,
]


@pytest.mark.parametrize("case", QUIRK_CASES, ids=[case.__name__ for case in QUIRK_CASES])
def test_every_quirk_lands_where_it_belongs(
    db: DatabaseManager, quirks: Quirks, case: Callable[[Imported], None]
) -> None:
    report = import_legacy_data(quirks.path, with_batch(db, 4))
    case(Imported(db, quirks, report, models_by_legacy_id(db), pending_by_legacy_id(db)))


def test_running_it_again_changes_nothing(db: DatabaseManager, quirks: Quirks) -> None:
    first = import_legacy_data(quirks.path, with_batch(db, 3))
    before = snapshot(db)
    again = import_legacy_data(quirks.path, with_batch(db, 5))
    assert snapshot(db) == before
    assert again.already_present == again.rows_read == first.rows_read
    assert (again.imported, again.staged, again.duplicates, again.tags_created) == (0, 0, 0, 0)


class Crash(Exception):
    pass


def test_a_crash_half_way_is_completed_by_running_again(
    db: DatabaseManager, quirks: Quirks
) -> None:
    calls: list[tuple[int, int]] = []

    def crash_after_first_batch(done: int, total: int) -> None:
        calls.append((done, total))
        raise Crash

    small = with_batch(db, 5)
    with pytest.raises(Crash):
        import_legacy_data(quirks.path, small, progress=crash_after_first_batch)
    assert calls == [(5, len(quirks.rows))]
    counts = db.catalog_counts()
    in_place = counts["models"] + sum(db.staging_counts().values())
    assert in_place == 5  # the first batch, whole
    resumed = import_legacy_data(quirks.path, small)
    assert resumed.already_present == 5
    assert resumed.accounted == resumed.rows_read
    after_crash = snapshot(db)

    empty_catalog(db)
    clean = import_legacy_data(quirks.path, small)
    assert clean.already_present == 0
    assert snapshot(db) == after_crash


def test_progress_after_each_batch(db: DatabaseManager, tmp_path: Path) -> None:
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3", rows=[LegacyModel(i, f"/m/{i}") for i in range(1, 11)]
    )
    calls: list[tuple[int, int]] = []
    import_legacy_data(path, with_batch(db, 4), progress=lambda *a: calls.append(a))
    assert calls == [(4, 10), (8, 10), (10, 10)]


def test_values_too_long_for_their_columns_are_kept_in_meta(
    db: DatabaseManager, tmp_path: Path
) -> None:
    long_type, long_name = "t" * 65, "n" * 600
    rows = [
        LegacyModel(1, "/m/1", long_type, long_name),  # lower case, too long: "other"
        LegacyModel(2, "/m/2", "x" * 64, hash_hex=sha("2")),  # exactly the width: kept
        LegacyModel(3, "/m/3", "LoRA " + "y" * 70, hash_hex=sha("3")),
        LegacyModel(4, "/m/4", "lora", "4.safetensors", hash_hex=sha("4")),
    ]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)
    import_legacy_data(path, db)
    staged = pending_by_legacy_id(db)[1]
    assert (staged.type, staged.meta["legacy"]["type"]) == ("other", long_type)
    assert (staged.name, staged.meta["legacy"]["name"]) == (long_name[:512], long_name)
    models = models_by_legacy_id(db)
    assert models[2].type == "x" * 64
    assert "type" not in models[2].meta["legacy"]
    assert (models[3].type, models[3].meta["legacy"]["type"]) == ("other", rows[2].type)
    assert "type" not in models[4].meta["legacy"]
    assert "name" not in models[4].meta["legacy"]


def test_a_tag_colour_that_gives_way_is_reported_and_kept(
    db: DatabaseManager, tmp_path: Path
) -> None:
    db.create_tag("fav", "#00ff00")  # the catalog has it already, in green
    tags = [
        *system_tags(),
        LegacyTag(8, "fav", "#F00"),  # the catalog's colour stays
        LegacyTag(9, "Red", "#f00"),  # one name once normalised: the first in id order wins
        LegacyTag(10, "red ", "#00f"),
        LegacyTag(11, "Green", "lime"),  # one name, one colour: no clash
        LegacyTag(12, "green", "#0F0"),
        LegacyTag(13, "blue", "#00f"),
        LegacyTag(14, "faded", None),  # no colour: nothing to lose
        LegacyTag(15, "FADED", "#123"),
    ]
    rows = [
        LegacyModel(1, "/m/1", "lora", hash_hex=sha("1")),
        LegacyModel(2, "/m/2", "lora"),
        LegacyModel(3, "/m/3", "lora", hash_hex=sha("3")),
    ]
    links = [(1, 8), (1, 10), (1, 11), (2, 9), (2, 10), (3, 13), (3, 12), (3, 14)]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, tags=tags, links=links)
    report = import_legacy_data(path, db)
    assert report.color_clashes == [
        {"tag_id": 8, "tag": "fav", "color": "#F00", "tag_color": "#00ff00"},
        {"tag_id": 10, "tag": "red ", "color": "#00f", "tag_color": "#ff0000"},
    ]
    assert report.unreadable_colors == []
    reasons = {(w["table"], w["legacy_id"]): w["reason"] for w in report.warnings}
    assert "'#F00' differs from '#00ff00'" in reasons[("tags", 8)]
    colours = {t.name: t.color for t, _ in db.list_tags()}
    assert (colours["fav"], colours["red"], colours["green"]) == ("#00ff00", "#ff0000", "#00ff00")
    assert (colours["blue"], colours["faded"]) == ("#0000ff", "#112233")
    models = models_by_legacy_id(db)
    assert models[1].meta["legacy"]["tag_colors"] == {"fav": "#F00", "red ": "#00f"}
    assert pending_by_legacy_id(db)[2].meta["legacy"]["tag_colors"] == {"red ": "#00f"}
    assert "tag_colors" not in models[3].meta["legacy"]
    assert tags_of(db, sha("1")) == ["fav", "green", "red"]

    before = snapshot(db)
    again = import_legacy_data(path, db)
    assert snapshot(db) == before
    assert again.color_clashes == report.color_clashes


def test_an_unknown_conflict_policy_is_refused_before_anything_is_read(
    db_url: str, tmp_path: Path
) -> None:
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=[LegacyModel(1, "/m/a")])
    db = DatabaseManager(db_url)
    try:
        with pytest.raises(
            ConfigError, match="'overwrite' is not valid: use one of merge, keep, replace"
        ):
            import_legacy_data(path, db, policy="overwrite")
        assert inspect(db.engine).get_table_names() == []
    finally:
        db.dispose()


# -- the catalog is never overwritten -----------------------------------------------


def test_a_catalog_row_is_never_overwritten(db: DatabaseManager, tmp_path: Path) -> None:
    db.upsert_model({"sha256": sha("x"), "path": "/m/clash", "meta": {"description": "v3"}})
    db.upsert_model({"sha256": sha("y"), "path": "/m/original"})
    db.upsert_model(
        {"sha256": sha("z"), "path": "/m/same", "type": "other",
         "meta": {"description": "v3 notes"}, "tags": ["v3-tag"]}
    )  # fmt: skip
    db.upsert_model({"sha256": sha("w"), "path": "/m/unhashed"})
    rows = [
        LegacyModel(1, "/m/clash", "lora", hash_hex=sha("other")),  # path known, other content
        LegacyModel(2, "/m/elsewhere", "lora", hash_hex=sha("y")),  # content known elsewhere
        LegacyModel(3, "/m/same", "lora", hash_hex=sha("z"),  # same content, same path
                    extra_json='{"description": "legacy notes", "rating": 4}'),
        LegacyModel(4, "/m/unhashed", "lora"),  # the worker will settle it
    ]  # fmt: skip
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3", rows=rows, links=[(1, 2), (2, 2), (3, 2), (4, 2)]
    )
    report = import_legacy_data(path, db)
    assert (report.conflicts, report.duplicates, report.merged, report.staged) == (1, 1, 1, 1)
    assert report.accounted == report.rows_read == 4
    pending = pending_by_legacy_id(db)
    assert (pending[1].status, pending[1].sha256) == ("conflict", sha("other"))
    assert pending[1].last_error is not None
    assert sha("x") in pending[1].last_error
    clash = db.get_model(sha("x"))
    assert clash is not None
    assert clash.meta == {"description": "v3"}
    assert clash.tags == ()
    assert (pending[2].status, pending[2].sha256) == ("duplicate", sha("y"))
    assert [t.name for t in db.get_tags_for_model(sha("y"))] == ["lora"]
    same = db.get_model(sha("z"))
    assert same is not None
    assert same.meta["description"] == "v3 notes"
    assert same.meta["rating"] == 4
    assert same.meta["legacy"]["id"] == 3
    assert same.type == "lora"
    assert [t.name for t in same.tags] == ["lora", "v3-tag"]
    assert pending[4].status == "pending"
    assert db.get_model(sha("w")) is not None

    before = snapshot(db)
    again = import_legacy_data(path, db)
    assert snapshot(db) == before
    assert again.already_present == 4


def test_rows_the_worker_finished_are_not_staged_again(db: DatabaseManager, tmp_path: Path) -> None:
    live = tmp_path / "live.safetensors"
    live.write_bytes(b"moved here")
    rows = [
        LegacyModel(1, "/gone/old-place.safetensors", "lora", hash_hex=sha("moved")),
        LegacyModel(2, str(live), "lora"),  # same content, not hashed by the legacy app
        LegacyModel(3, "/m/fresh.safetensors", "vae", extra_json='{"description": "d"}'),
    ]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=[(2, 2), (3, 4)])
    first = import_legacy_data(path, db)
    assert (first.imported, first.staged) == (1, 2)

    # what the worker does with a staged row: settle the hashed file, drop the row
    for legacy_id, content, outcome in [
        (2, "moved", Outcome.MOVED),
        (3, "fresh", Outcome.IMPORTED),
    ]:
        with db.session_scope() as s:
            row = s.scalar(select(PendingImport).where(PendingImport.legacy_id == legacy_id))
            assert row is not None
            item = HashedFile(
                sha256=sha(content), path=row.path, name=row.name, type=row.type,
                meta=row.meta, tags=[TagSpec.parse(t) for t in row.tags],
            )  # fmt: skip
            settled = settle_file(s, item, path_is_live=lambda p: Path(p).exists())
            assert settled.outcome is outcome
            s.delete(row)
    before = snapshot(db)
    assert before["pending"] == []

    again = import_legacy_data(path, db)
    assert snapshot(db) == before
    assert again.already_present == 3
    assert again.staged == again.duplicates == 0


def test_a_path_staged_from_another_legacy_file_is_left_alone(
    db: DatabaseManager, tmp_path: Path
) -> None:
    rows = [LegacyModel(1, "/shared/a.safetensors", "lora")]
    first = write_legacy_catalog(tmp_path / "one.sqlite3", rows=rows)
    second = write_legacy_catalog(tmp_path / "two.sqlite3", rows=rows)
    import_legacy_data(first, db)
    report = import_legacy_data(second, db)
    assert report.already_present == 1
    assert f"imported already from {first.resolve()}" in report.warnings[0]["reason"]
    assert [p.source for p in db.get_pending_imports()] == [str(first.resolve())]


# -- the legacy file: refused when it is not one, and never written ------------------


@pytest.mark.parametrize("kind", ["missing", "not-sqlite", "version-9", "extra-table", "locked"])
def test_a_bad_legacy_file_leaves_the_catalog_untouched(
    db_url: str, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hikaze_mm.sqlite3"
    holder = None
    if kind == "not-sqlite":
        path.write_text("not a database")
    elif kind == "version-9":
        write_legacy_catalog(path, schema_version=9)
    elif kind == "extra-table":
        write_legacy_catalog(path, rows=[LegacyModel(1, "/m/a")])
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE plugins (x)")
    elif kind == "locked":
        write_legacy_catalog(path, rows=[LegacyModel(1, "/m/a")])
        monkeypatch.setattr("modelvault.legacy.reader.LEGACY_BUSY_TIMEOUT_SECONDS", 0.05)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    db = DatabaseManager(db_url)
    try:
        with pytest.raises(LegacyDatabaseError, match=re.escape(f"the legacy catalog {path}")):
            import_legacy_data(path, db)
        assert inspect(db.engine).get_table_names() == []  # not even migrated
        db.init_db()
        with pytest.raises(LegacyDatabaseError):
            import_legacy_data(path, db)
        assert db.catalog_counts() == {"models": 0, "tags": 0, "links": 0}
        assert sum(db.staging_counts().values()) == 0
    finally:
        db.dispose()
        if holder is not None:
            holder.close()


def test_the_legacy_file_and_its_wal_are_byte_identical_afterwards(
    db: DatabaseManager, tmp_path: Path
) -> None:
    rows = [LegacyModel(i, f"/m/{i}", hash_hex=sha(str(i)) if i % 2 else "") for i in range(1, 30)]
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3", rows=rows, links=[(1, 1), (2, 2)], leave_wal=True
    )
    wal = Path(f"{path}-wal")
    before = path.read_bytes(), wal.read_bytes()
    report = import_legacy_data(path, with_batch(db, 7))
    assert (report.imported, report.staged) == (15, 14)  # the rows live in the WAL only
    assert (path.read_bytes(), wal.read_bytes()) == before


def test_importing_while_the_legacy_app_holds_the_file_and_writes(
    db: DatabaseManager, tmp_path: Path
) -> None:
    rows = [LegacyModel(i, f"/m/{i}", "lora") for i in range(1, 11)]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, wal=True)
    app = hold_open_in_wal(path)
    app.execute("BEGIN IMMEDIATE")  # the app is in the middle of a write
    app.execute("UPDATE models SET name = 'renamed' WHERE id = 1")
    written: list[int] = []

    def app_keeps_writing(done: int, total: int) -> None:
        if app.in_transaction:
            app.execute("COMMIT")
        if len(written) < 2:
            new_id = 100 + len(written)
            app.execute(
                "INSERT INTO models (id, path, type, hash_hex, created_at) "
                "VALUES (?, ?, 'vae', '', 0)",
                (new_id, f"/m/new-{new_id}"),
            )
            written.append(new_id)

    try:
        report = import_legacy_data(path, with_batch(db, 4), progress=app_keeps_writing)
    finally:
        app.close()
    assert report.rows_read == 12
    assert report.staged == 12
    names = {p.legacy_id: p.name for p in db.get_pending_imports()}
    assert names[1] == "1"
    assert names[100] == "new-100"


def test_the_default_catalog_is_the_configured_one_migrated_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "data" / "catalog.sqlite3"
    target.parent.mkdir()  # only the default data folder is made by modelvault
    monkeypatch.setenv("MODELVAULT_DB_PATH", str(target))
    monkeypatch.setenv("MODELVAULT_IMPORT_BATCH_SIZE", "2")
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3", rows=[LegacyModel(1, "/m/a", hash_hex=sha("a"))]
    )
    calls: list[tuple[int, int]] = []
    report = import_legacy_data(str(path), progress=lambda *a: calls.append(a))
    assert report.imported == 1
    assert calls == [(1, 1)]
    db = DatabaseManager(target)
    try:
        assert db.get_model(sha("a")) is not None
    finally:
        db.dispose()


# -- it streams -----------------------------------------------------------------


def test_no_query_per_row(db: DatabaseManager, tmp_path: Path) -> None:
    """Four batches of 8 rows or of 256: the same statements. (On SQLite a table's
    rows go in statements of fixed sizes, the largest then powers of two: with
    batches of a power of two, each table's rows of a batch are one statement.)"""
    counts = []
    for rows_per_batch in (8, 256):
        n = 4 * rows_per_batch
        rows = [
            LegacyModel(i, f"/m/{i}", "lora", hash_hex=sha(str(i)) if i % 2 else "",
                        extra_json='{"description": "x"}')
            for i in range(1, n + 1)
        ]  # fmt: skip
        links = [(i, t) for i in range(1, n + 1) for t in (2, 8)]
        path = write_legacy_catalog(
            tmp_path / f"{n}.sqlite3",
            rows=rows,
            tags=[*system_tags(), LegacyTag(8, "x")],
            links=links,
        )
        empty_catalog(db)
        with statements_run(db) as statements:
            report = import_legacy_data(path, with_batch(db, rows_per_batch))
        assert report.imported == report.staged == n // 2
        counts.append(len(statements))
    assert counts[0] == counts[1]


def test_warnings_are_capped_and_counted(db: DatabaseManager, tmp_path: Path) -> None:
    n = MAX_WARNINGS + 7
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3",
        rows=(LegacyModel(i, f"/m/{i}", hash_hex="junk") for i in range(1, n + 1)),
    )
    report = import_legacy_data(path, db)
    assert report.staged == n
    assert (len(report.warnings), report.warnings_omitted) == (MAX_WARNINGS, 7)


def test_warnings_about_models_come_before_those_about_links_of_no_model(
    db: DatabaseManager, tmp_path: Path
) -> None:
    """The legacy app left links behind when it deleted models: more of them than
    the report keeps must not push the warnings about the models out of it."""
    rows = [LegacyModel(i, f"/m/{i}", hash_hex=sha(str(i)) * (i % 2)) for i in range(1, 41)]
    rows.append(LegacyModel(10 * MAX_WARNINGS, "/m/last", hash_hex="junk"))
    links = [(i, 1) for i in range(100, 100 + MAX_WARNINGS + 5)]  # below the last id
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=links)
    report = import_legacy_data(path, with_batch(db, 8))
    kept = [w["table"] for w in report.warnings]
    assert kept.count("models") == 1  # the junk hash
    assert kept.count("model_tags") == MAX_WARNINGS - 1
    assert report.warnings_omitted == 6


def test_the_report_is_plain_data() -> None:
    report = ImportReport(legacy_path="/x", rows_read=3, imported=1, staged=1, already_present=1)
    assert report.accounted == 3
    assert json.loads(json.dumps(report.to_dict()))["already_present"] == 1


def stored_meta_text(db: DatabaseManager) -> dict[int, str]:
    """legacy id -> the meta text as the catalog stores it (models and staging rows)."""
    with db.engine.connect() as conn:
        cast = "meta::text" if conn.dialect.name == "postgresql" else "meta"
        texts: dict[int, str] = {}
        for table in ("models", "pending_import"):
            for (text,) in conn.exec_driver_sql(f"SELECT {cast} FROM {table}"):
                texts[json.loads(text)["legacy"]["id"]] = text
    return texts


def test_the_users_extra_json_text_is_kept_in_meta(db_url: str, tmp_path: Path) -> None:
    """The user's own keys keep the legacy text as written; modelvault's keys follow.
    Any other meta (keys moved aside, text that is not an object) is encoded whole."""
    settings = Settings(db_url=db_url, images_dir=tmp_path / "store")
    db = DatabaseManager(db_url, settings=settings)
    images = tmp_path / "legacy-images"
    images.mkdir()
    (images / "p.png").write_bytes(b"\x89PNG preview")
    extras = {
        1: json.dumps({"description": "as json.dumps writes it", "n": [1, 2.5, None]}),
        2: '{"compact":true,"nested":{"a":"\\u00e9 \\" }"}}',  # escapes, a brace in a string
        3: " {  } \n",  # empty, with JSON whitespace around and inside
        4: '{"images": ["/media/p.png"], "note": "with a preview"}',
        5: '{"legacy": "the user\'s own key", "x": 1}',  # moved aside: encoded whole
        6: '{"twice": 1, "twice": 2}',  # repeated keys: kept as raw text, encoded whole
        7: "[1, 2]",  # not an object
    }
    rows = [
        LegacyModel(i, f"/m/{i}", "lora", hash_hex=sha(str(i)) if i % 2 else "", extra_json=text)
        for i, text in extras.items()
    ]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)
    try:
        import_legacy_data(path, db, images_dir=images)
        stored = stored_meta_text(db)
    finally:
        db.dispose()
    assert set(stored) == set(extras)
    for legacy_id, text in stored.items():
        meta = json.loads(text)
        if legacy_id <= 4:
            head = extras[legacy_id].strip()[:-1].rstrip()
            assert text.startswith(head), legacy_id
            assert text == json.dumps(meta) or legacy_id in (2, 3), legacy_id
        else:
            assert text == json.dumps(meta), legacy_id
    assert json.loads(stored[2])["nested"] == {"a": 'é " }'}
    assert set(json.loads(stored[3])) == {"legacy"}
    assert json.loads(stored[4])["previews"][0]["source"] == "/media/p.png"
    assert json.loads(stored[5])["legacy"]["extra_json_shadowed"] == {
        "legacy": "the user's own key"
    }
    assert json.loads(stored[7])["legacy"]["extra_json"] == [1, 2]


def test_json_no_float_holds_and_repeats_before_an_error_are_kept_as_text(
    db_url: str, tmp_path: Path
) -> None:
    """A number beyond a float's range would be read as infinity and written back
    as ``Infinity``, which is not JSON (PostgreSQL refuses the whole batch); text
    that repeats a key before it turns invalid was read once more and raised.
    Both are kept as their text, like any JSON that cannot be stored."""
    db = DatabaseManager(db_url, settings=Settings(db_url=db_url, images_dir=tmp_path / "s"))
    odd = {
        1: ('{"weight": 1e400, "note": "huge"}', None),
        2: ('{"a": 1, "a": 2} trailing', None),
        3: ("{}", '{"w": -1E999}'),
        4: ('{"fine": 1.5, "tiny": 1e-400}', '{"ok": 2.5}'),
    }
    rows = [
        LegacyModel(i, f"/m/{i}", "lora", hash_hex=sha(str(i)) if i % 2 else "",
                    extra_json=extra, meta_json=meta)
        for i, (extra, meta) in odd.items()
    ]  # fmt: skip
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)
    try:
        report = import_legacy_data(path, db)
        stored = {i: json.loads(text) for i, text in stored_meta_text(db).items()}
    finally:
        db.dispose()
    assert report.rows_read == 4
    assert report.imported + report.staged == 4
    assert stored[1]["legacy"]["extra_json_raw"] == odd[1][0]
    assert "weight" not in stored[1]
    assert stored[2]["legacy"]["extra_json_raw"] == odd[2][0]
    assert stored[3]["legacy"]["meta_json_raw"] == odd[3][1]
    assert stored[4]["fine"] == 1.5
    assert stored[4]["legacy"]["meta_json"] == {"ok": 2.5}
    reasons = {w["legacy_id"]: w["reason"] for w in report.warnings}
    assert "holds the number 1e400" in reasons[1]
    assert "not valid JSON" in reasons[2]
    assert "holds the number -1E999" in reasons[3]
    assert 4 not in reasons
