"""Read-only access to a legacy catalog file (``hikaze_mm.sqlite3``, see LEGACY.md).

``open_legacy(path)`` checks that the file is one of the two known layouts and
refuses anything else with a ``LegacyDatabaseError`` that says, in one sentence,
which file and what is wrong with it. The file is only ever opened through a
read-only SQLite URI (``mode=ro``), with ``query_only`` on as well: the legacy app
may still be running, and its data must come out of the migration byte-identical.
Nothing is ever created beside it: a WAL-mode file that SQLite could read only by
creating a ``-shm`` there is copied (with its ``-wal``) into a private folder, and
the copy is read. A file that fails ``PRAGMA quick_check`` is refused as damaged.

Rows are read in batches, each in its own short read, so that a legacy app
writing in rollback-journal mode is never blocked for longer than one batch, and
every model and every ``model_tags`` row is seen exactly once. A file as the
legacy app makes it is read in the order of the stored hashes (see
``LegacyCatalog.batches``: the catalog's largest indexes are keyed by SHA-256);
any other is read by id range (``WHERE id > ? ORDER BY id LIMIT ?``), each batch
with the links of its range, then the links past the last model.

A TEXT value that is not UTF-8 stops nothing: the batch that holds one is read
again with a text factory that gives such values as ``NotUtf8Text`` (their
exact bytes); BLOB values are ``bytes``. The importer keeps both byte for byte.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import shutil
import sqlite3
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from modelvault.db.network import network_filesystem
from modelvault.db.sqlite_files import HEADER_SIZE, SQLITE_MAGIC, path_problem, sqlite_uri
from modelvault.errors import LegacyDatabaseError
from modelvault.migration import private_copies
from modelvault.migration.legacy_order import HashOrder, IdRanges, bucket_digits

log = logging.getLogger(__name__)

LEGACY_FILE_NAME = "hikaze_mm.sqlite3"
# The legacy app's transactions are short; waiting longer than this for its lock
# means it holds the file exclusively, and the user is better told so.
LEGACY_BUSY_TIMEOUT_SECONDS = 2.0

# A batch of models holds at most this many links (fewer models if need be), so
# memory stays flat however many tags a model has; one model's links come whole.
LINKS_PER_BATCH = 100_000
# A copy of a WAL-mode file is made again when the legacy app wrote meanwhile.
COPY_ATTEMPTS = 3

TABLES = frozenset({"schema_version", "directories", "models", "tags", "model_tags"})
# Tables of a modelvault (v3) catalog, to tell the user they picked the wrong file.
V3_TABLES = frozenset({"models", "tags", "model_tags", "pending_import"})
LAYOUT2_MODEL_COLUMNS = (
    "id",
    "path",
    "name",
    "type",
    "size_bytes",
    "hash_hex",
    "created_at",
    "meta_json",
    "extra_json",
)
LAYOUT1_ONLY_COLUMNS = ("dir_path", "mtime_ns", "hash_algo", "updated_at")
TABLE_COLUMNS = {
    "schema_version": frozenset({"version"}),
    "directories": frozenset({"id", "path", "alias", "parent_id"}),
    "tags": frozenset({"id", "name", "color", "created_at"}),
    "model_tags": frozenset({"model_id", "tag_id"}),
}


class LegacyLayout(enum.IntEnum):
    """The two legacy layouts, by their ``schema_version.version``."""

    V1 = 1  # older: models also has dir_path, mtime_ns, hash_algo, updated_at
    V2 = 2  # current legacy


# The columns of the legacy ``models`` table in each layout.
LEGACY_MODEL_COLUMNS = {
    LegacyLayout.V2: frozenset(LAYOUT2_MODEL_COLUMNS),
    LegacyLayout.V1: frozenset(LAYOUT2_MODEL_COLUMNS + LAYOUT1_ONLY_COLUMNS),
}


class LegacyRow(NamedTuple):
    """One row of the legacy ``models`` table, as stored (no cleaning yet).

    Values are what SQLite holds, so a hand-edited file may put any type in any
    column (a BLOB is ``bytes``, TEXT that is not UTF-8 ``NotUtf8Text``); the
    importer decides what each value means. The last four fields
    exist in layout 1 only and are None in layout 2.
    """

    id: int
    path: Any
    name: Any
    type: Any
    size_bytes: Any
    hash_hex: Any
    created_at: Any
    meta_json: Any
    extra_json: Any
    dir_path: Any = None
    mtime_ns: Any = None
    hash_algo: Any = None
    updated_at: Any = None


class LegacyTagRow(NamedTuple):
    id: int
    name: Any
    color: Any
    created_at: Any


class LegacyBatch(NamedTuple):
    """Models and ``model_tags`` rows: at most ``LINKS_PER_BATCH`` links unless one
    model has more (its links come whole, with it). Some batches carry only links
    that name no model (see ``LegacyCatalog.batches``). The lists are the
    caller's: it may empty them once read, to free their memory early."""

    rows: list[LegacyRow]
    links: list[tuple[Any, Any]]


def _model_columns(layout: LegacyLayout, table: str = "") -> str:
    """The columns of a ``LegacyRow``, NULL for those the layout lacks."""
    layout1 = LAYOUT1_ONLY_COLUMNS if layout is LegacyLayout.V1 else ()
    columns = [f"{table}{column}" for column in LAYOUT2_MODEL_COLUMNS + layout1]
    return ", ".join(columns + ["NULL"] * (4 - len(layout1)))


def _select_models(layout: LegacyLayout) -> str:
    return f"SELECT {_model_columns(layout)} FROM models WHERE id > ? ORDER BY id LIMIT ?"


# The ordering reads (see legacy_order.HashOrder.add).
_IDS_HASHES_AND_PATHS = "SELECT id, hash_hex, path FROM models WHERE id > ? ORDER BY id LIMIT ?"


def _select_models_listed(layout: LegacyLayout) -> str:
    """The models whose ids a JSON array lists, in any order (``json_each`` has
    columns named ``id`` and ``path`` too: every column is the model's)."""
    return (
        f"SELECT {_model_columns(layout, 'm.')} FROM json_each(?) AS j "
        "CROSS JOIN models AS m ON m.id = j.value"
    )


# The links of the listed models in the list's order, each model's by tag id.
# CROSS JOIN makes the list the outer loop and each model's links come from the
# (model_id, tag_id) key, so they come in that order with no sort and LIMIT stops
# early; an ORDER BY would first read every link of the batch's models (ten
# million in bench/import_bench.py --links-stress). _listed_links checks it.
_LINKS_LISTED = (
    "SELECT l.model_id, l.tag_id FROM json_each(?) AS j "
    "CROSS JOIN model_tags AS l ON l.model_id = j.value"
)
_LINKS_LISTED_SORTED = (
    "SELECT l.model_id, l.tag_id FROM json_each(?) AS j "
    "JOIN model_tags AS l ON l.model_id = j.value ORDER BY j.key"
)


def _listed_links(
    cursor: Any, listed: str, position: dict[int, int], limit: int | None
) -> list[Any]:
    """The links of the models ``listed`` (a JSON array), in its order: at most
    ``limit`` (None: all)."""
    suffix, params = ("", (listed,)) if limit is None else (" LIMIT ?", (listed, limit))
    links: list[Any] = cursor.execute(_LINKS_LISTED + suffix, params).fetchall()
    models = [position[model_id] for model_id, _ in links]
    if models == sorted(models):  # in the list's order: one pass (timsort)
        return links
    # Another join order after all: the sort in SQL, which reads all the links first.
    sorted_links: list[Any] = cursor.execute(_LINKS_LISTED_SORTED + suffix, params).fetchall()
    return sorted_links


def _affinity(declared: str) -> str:
    """The affinity SQLite gives a column of this declared type (its rules, in order)."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if any(word in kind for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in kind or not kind:
        return "BLOB"
    if any(word in kind for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Every read of links by model_id: the links whose model_id meets ``where``, in
# key order; or the window's end, the model_id LINKS_PER_BATCH links on (OFFSET).
# ``where`` compares _link_key. A text value sorts after every number in SQLite,
# a blob after every text, and NULL meets no comparison.
_LINKS_WHERE = "SELECT model_id, tag_id FROM model_tags WHERE {where} ORDER BY model_id, tag_id"
_WINDOW_END_WHERE = (
    "SELECT model_id FROM model_tags WHERE {where} ORDER BY model_id LIMIT 1 OFFSET ?"
)
_NOT_LISTED = " AND model_id NOT IN (SELECT value FROM json_each(?))"
_LINKS_OF_NULL = "SELECT model_id, tag_id FROM model_tags WHERE model_id IS NULL ORDER BY tag_id"
# Text compares equal only to text: a path stored as a blob or a number never matches.
_IDS_WITH_PATH = "SELECT id FROM models WHERE path = ? AND typeof(path) = 'text' ORDER BY id"


class LegacyCatalog:
    """An open, validated legacy catalog. Use ``open_legacy`` to get one.

    ``path`` is the legacy file; ``copy``, when set, is the private folder
    holding the snapshot that is read instead (see ``open_legacy``).
    """

    def __init__(
        self, path: Path, engine: Engine, layout: LegacyLayout, copy: Path | None = None
    ) -> None:
        self.path = path
        self.engine = engine
        self.layout = layout
        self.copy = copy

    def __enter__(self) -> LegacyCatalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LegacyCatalog({str(self.path)!r}, layout={int(self.layout)})"

    def close(self) -> None:
        self.engine.dispose()
        if self.copy is not None:
            shutil.rmtree(self.copy, ignore_errors=True)
            self.copy = None

    def count_models(self) -> int:
        return int(self._query("SELECT count(*) FROM models")[0][0])

    def ids_with_path(self, path: str) -> list[int]:
        """The ids of the models whose path is stored as exactly this text (one indexed read)."""
        return [row[0] for row in self._query(_IDS_WITH_PATH, (path,))]

    def tags(self, ids: Sequence[Any] | None = None) -> list[LegacyTagRow]:
        """All legacy tags, or those with the given ids."""
        sql = "SELECT id, name, color, created_at FROM tags"
        if ids is None:
            return [LegacyTagRow(*row) for row in self._query(sql + " ORDER BY id")]
        found: list[LegacyTagRow] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows = self._query(f"{sql} WHERE id IN ({marks}) ORDER BY id", chunk)
            found.extend(LegacyTagRow(*row) for row in rows)
        return found

    def tag_chunks(self, size: int) -> Iterator[list[LegacyTagRow]]:
        """All legacy tags in id order, ``size`` at a time, each chunk its own read."""
        last_id: Any = _BEFORE_EVERY_ID
        while True:
            rows = self._query(
                "SELECT id, name, color, created_at FROM tags WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, size),
            )
            if not rows:
                return
            yield [LegacyTagRow(*row) for row in rows]
            last_id = rows[-1][0]

    def batches(self, size: int, *, in_hash_order: bool = True) -> Iterator[LegacyBatch]:
        """Every model, ``size`` at a time, each batch with the links of its models;
        and every link that names no model, in batches of their own.

        With ``in_hash_order``, a file as the legacy app makes it (see
        ``_hash_order_possible``) is read in the order of the stored hashes, which
        the catalog's keys are in (see ``legacy_order``; 1,000,000 rows: a fifth
        less time than in id order):

        1. The ids, a batch at a time, sorted into buckets by their hash's first
           digits, those without a hash on their own (``HashOrder``).
        2. The models, those without a hash first, then bucket by bucket, each
           batch with its links (read by id: a model the legacy app deleted
           meanwhile has its links here, where the importer reports them).
        3. The links up to the last id read whose model_id is none of the ids
           read, a window at a time.
        4. By id range, the models the legacy app added meanwhile and the links
           past them.

        Rows of one content share a bucket, so they come one after another in id
        order (in one batch unless a batch is cut for its links): the lowest id
        becomes the model, as in id order. Should the legacy app change a hash
        while this reads, its row still comes with the bucket its id was sorted
        into: a copy of a file may then come before the lower id and become the
        model, the lower id its duplicate, notes and tags kept as for any
        duplicate. Any other file, or without ``in_hash_order``, is read by id
        range (``_batches_by_id``).
        """
        possible = in_hash_order and self._hash_order_possible()
        order = self._hash_order(size) if possible else None
        if order is None:
            yield from self._batches_by_id(size)
            return
        select_models = _select_models_listed(self.layout)
        for ids in order.batches(size):
            while ids:
                try:
                    batch, covered = self._listed_batch(select_models, ids, tolerant=False)
                except _NotUtf8:  # rare: read this batch again, the slower way that keeps bytes
                    batch, covered = self._listed_batch(select_models, ids, tolerant=True)
                ids = ids[covered:]
                yield batch  # the caller may empty its lists: nothing here reads them again
        yield from self._links_of_no_listed_model(order.ids)
        yield from self._batches_by_id(size, after=order.ids.last)

    def _hash_order_possible(self) -> bool:
        """Whether ``models`` is keyed by ``id`` with unique paths and ``model_tags``
        by (model_id, tag_id) with an integer model_id, as the legacy app makes them.
        A hand-made file may differ (ids that are text, links keyed by text, two
        rows with one path, no keys at all): it is read in id order, where each of
        these reads right."""
        models = self._query("PRAGMA table_info(models)")
        model_key = [(name, str(kind).upper()) for _, name, kind, _, _, pk in models if pk]
        link_key = sorted((pk, name) for _, name, _, _, _, pk in self._link_columns if pk)
        return (
            model_key == [("id", "INTEGER")]
            and link_key == [(1, "model_id"), (2, "tag_id")]
            and self._link_model_affinity == "INTEGER"  # '5' is stored as 5
            and self._path_is_unique()
        )

    def _path_is_unique(self) -> bool:
        """Whether an index keeps every path unique (not a partial one)."""
        for _, name, unique, _origin, partial in self._query("PRAGMA index_list(models)"):
            info = self._query(f"PRAGMA index_info({_quoted(name)})")
            if unique and not partial and [row[2] for row in info] == ["path"]:
                return True
        return False

    def _hash_order(self, size: int) -> HashOrder | None:
        """The model ids, read ``size`` at a time in id order (each read short),
        sorted into ``HashOrder``'s buckets; None when a row must be read in id
        order (see ``HashOrder.add``: a hand-made file) or there are no models."""
        order = HashOrder(bucket_digits(self.count_models(), size))
        last: float = _BEFORE_EVERY_ID
        while chunk := self._query(_IDS_HASHES_AND_PATHS, (last, size)):
            if not order.add(chunk):
                return None
            last = chunk[-1][0]
        return order if order.ids else None

    def _links_of_no_listed_model(self, ids: IdRanges) -> Iterator[LegacyBatch]:
        """The links up to the last of ``ids`` whose model_id is none of them, a
        window of about ``LINKS_PER_BATCH`` links (and ids) per read.

        Whether a link names a model is decided by the ids read, not by the models
        there are now: the batch that listed an id read its links, so a model the
        legacy app deleted after its id was read had its links read once, there.
        """
        top = ids.last
        compare, low = ">=", float("-inf")  # the first window: a number below every id
        while True:
            listed = ids.after(low, LINKS_PER_BATCH)
            high = listed[-1]
            where = f"model_id {compare} ? AND model_id <= ?"
            with self._reading() as cursor:
                end = cursor.execute(
                    _WINDOW_END_WHERE.format(where=where), (low, high, LINKS_PER_BATCH)
                ).fetchone()
                if end is not None:
                    high = end[0]
                    listed = listed[: bisect_right(listed, high)]
                links = cursor.execute(
                    _LINKS_WHERE.format(where=where + _NOT_LISTED),
                    (low, high, json.dumps(listed)),
                ).fetchall()
            if links:
                yield LegacyBatch([], links)
            if high == top:
                return
            compare, low = ">", high

    def _listed_batch(
        self, select_models: str, ids: list[int], *, tolerant: bool
    ) -> tuple[LegacyBatch, int]:
        """The models of ``ids``, in that order, with their links; and how many of
        ``ids`` the batch covers (fewer when their links exceed ``LINKS_PER_BATCH``:
        the models before the one whose links may not all have come, or, when the
        first one alone has more, that model with all its links)."""
        listed = json.dumps(ids)
        with self._reading(tolerant=tolerant) as cursor:
            rows = list(map(LegacyRow._make, cursor.execute(select_models, (listed,)).fetchall()))
            position = {id_: number for number, id_ in enumerate(ids)}
            rows.sort(key=lambda row: position[row.id])
            links = _listed_links(cursor, listed, position, LINKS_PER_BATCH + 1)
            covered = len(ids)
            if len(links) > LINKS_PER_BATCH:
                covered = position[links[LINKS_PER_BATCH][0]]
                if covered == 0:  # the first model alone has more: it comes with all of them
                    covered = 1
                    links = _listed_links(cursor, json.dumps(ids[:1]), position, None)
        if covered == len(ids):
            return LegacyBatch(rows, links), covered
        whole = set(ids[:covered])
        kept = [row for row in rows if row.id in whole]
        return LegacyBatch(kept, [link for link in links if link[0] in whole]), covered

    def _batches_by_id(self, size: int, after: int | None = None) -> Iterator[LegacyBatch]:
        """The models in id order (past ``after``), ``size`` at a time, each with the
        links of its id range; then the links past the last model, in batches too
        (always one, empty or not)."""
        select_models = _select_models(self.layout)
        last_id = after
        while True:
            budget = LINKS_PER_BATCH
            try:
                batch = self._batch(select_models, last_id, size, tolerant=False, budget=budget)
            except _NotUtf8:  # rare: read this batch again, the slower way that keeps bytes
                batch = self._batch(select_models, last_id, size, tolerant=True, budget=budget)
            if batch is None:
                break
            last_id = batch.rows[-1].id
            yield batch  # the caller may empty its lists once read: nothing here reads them again
        yield from self._links_past(last_id)

    def _links_past(self, after: Any) -> Iterator[LegacyBatch]:
        """The links whose model_id is past ``after`` (None: every link) or NULL,
        a window of about ``LINKS_PER_BATCH`` links per read, so that no read is
        held open while the caller works (always one batch, empty or not).
        Past the last id is any number above it, and any text or blob."""
        with self._reading() as cursor:  # a hand-made file's: the legacy app's are NOT NULL
            links = cursor.execute(_LINKS_OF_NULL).fetchall()
        key = self._link_key
        compare, low = (">=", float("-inf")) if after is None else (">", after)
        while True:
            past = f"{key} {compare} ?"
            with self._reading() as cursor:
                end = cursor.execute(
                    _WINDOW_END_WHERE.format(where=past), (low, LINKS_PER_BATCH)
                ).fetchone()
                if end is None:  # the rest
                    links += cursor.execute(_LINKS_WHERE.format(where=past), (low,)).fetchall()
                else:
                    window = _LINKS_WHERE.format(where=f"{past} AND {key} <= ?")
                    links += cursor.execute(window, (low, end[0])).fetchall()
            yield LegacyBatch([], links)
            if end is None:
                return
            links, compare, low = [], ">", end[0]

    @functools.cached_property
    def _link_key(self) -> str:
        """What the reads by range compare: ``model_id``, or ``+model_id`` where the
        column has TEXT affinity (a hand-made file). There SQLite would compare a
        number with it as text ('10' before '2') while the models come in number
        order, and a link could come in two ranges; ``+`` compares the values as
        stored, in the order the models come in (with no index: each such read
        scans the links)."""
        return "+model_id" if self._link_model_affinity == "TEXT" else "model_id"

    @functools.cached_property
    def _link_columns(self) -> list[Any]:
        return self._query("PRAGMA table_info(model_tags)")

    @property
    def _link_model_affinity(self) -> str:
        kind = next(kind for _, name, kind, *_ in self._link_columns if name == "model_id")
        return _affinity(str(kind))

    def _batch(
        self,
        select_models: str,
        last_id: int | None,
        size: int,
        *,
        tolerant: bool,
        budget: int,
    ) -> LegacyBatch | None:
        with self._reading(tolerant=tolerant) as cursor:
            rows = cursor.execute(
                select_models, (_BEFORE_EVERY_ID if last_id is None else last_id, size)
            )
            batch = list(map(LegacyRow._make, rows.fetchall()))
            if not batch:
                return None
            ranges = _Ranges(cursor, self._link_key, last_id)
            links = ranges.links(batch[-1].id, budget + 1)
            if len(links) > budget:
                batch, links = ranges.cut(batch, links, budget)
        return LegacyBatch(batch, links)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._reading() as cursor:
            rows: list[Any] = cursor.execute(sql, params).fetchall()
        return rows

    @contextmanager
    def _reading(self, *, tolerant: bool = True) -> Iterator[Any]:
        """A cursor on the read-only connection; driver errors become one clear sentence.

        ``tolerant`` reads TEXT that is not UTF-8 as ``NotUtf8Text`` (its bytes);
        otherwise such a value raises ``_NotUtf8``, and the caller reads again
        tolerantly (a callable per text value costs a third more per row).
        """
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                assert raw is not None
                raw.text_factory = _text_or_bytes if tolerant else str
                cursor = raw.cursor()
                try:
                    yield cursor
                finally:
                    cursor.close()
        except sqlite3.OperationalError as exc:
            if not tolerant and "could not decode to utf-8" in str(exc).lower():
                raise _NotUtf8 from exc
            raise _read_error(self.path, exc) from exc
        except (sqlite3.Error, DBAPIError) as exc:
            raise _read_error(self.path, exc) from exc


class _Ranges:
    """The links of the ranges (after, top] for one ``after``, read on ``cursor``."""

    def __init__(self, cursor: Any, key: str, after: Any) -> None:
        self.cursor = cursor
        where, self.bounds = (
            (f"{key} <= ?", []) if after is None else (f"{key} > ? AND {key} <= ?", [after])
        )
        self.sql = _LINKS_WHERE.format(where=where)

    def links(self, top: Any, limit: int | None) -> list[Any]:
        """The links whose model_id is in (after, top] (all up to top when ``after``
        is None), at most ``limit`` of them."""
        if limit is None:
            rows: list[Any] = self.cursor.execute(self.sql, [*self.bounds, top]).fetchall()
        else:
            rows = self.cursor.execute(f"{self.sql} LIMIT ?", [*self.bounds, top, limit]).fetchall()
        return rows

    def count(self, top: Any, limit: int) -> int:
        """How many links ``links`` gives for (after, top], counting no further than ``limit``."""
        found = self.cursor.execute(
            f"SELECT count(*) FROM ({self.sql} LIMIT ?)", [*self.bounds, top, limit]
        )
        return int(found.fetchone()[0])

    def cut(
        self, batch: list[LegacyRow], links: list[Any], budget: int
    ) -> tuple[list[LegacyRow], list[Any]]:
        """Fewer models, so that the batch's links stay within ``budget``: the most
        models whose id range holds at most ``budget`` links, or, when the first
        model alone has more, that model with all its links.

        SQLite counts the links of a range, as it read them: a hand-made file may
        mix types in its ids, and only its comparisons agree with the range each
        batch reads."""
        whole, more = 0, len(batch)  # whole rows found; at most this many
        while whole < more:
            middle = (whole + more + 1) // 2
            if self.count(batch[middle - 1].id, budget + 1) <= budget:
                whole = middle
            else:
                more = middle - 1
        if whole == 0:
            return batch[:1], self.links(batch[0].id, None)
        return batch[:whole], links[: self.count(batch[whole - 1].id, budget)]


class NotUtf8Text(bytes):
    """A TEXT value of the legacy file that is not UTF-8, as its exact bytes (a
    BLOB value is plain ``bytes``)."""


class _NotUtf8(Exception):
    """A TEXT value that is not UTF-8 was met by a read that expects UTF-8."""


def _text_or_bytes(value: bytes) -> str | NotUtf8Text:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return NotUtf8Text(value)


# Below every id, -2**63 included (a real; a text id sorts after every number).
_BEFORE_EVERY_ID = float("-inf")


def open_legacy(
    path: str | os.PathLike[str], *, busy_timeout_seconds: float | None = None
) -> LegacyCatalog:
    """Open a legacy catalog read-only and recognise its layout.

    Raises ``LegacyDatabaseError`` for anything that is not a legacy catalog we
    know: a missing file, a folder, not SQLite (or encrypted), truncated, locked,
    other tables, another schema_version, or damaged (``PRAGMA quick_check``).
    A WAL-mode file is read from a private copy unless the legacy app's ``-wal``
    and ``-shm`` are both there and the folder is writable (see ``_needs_copy``).
    """
    file = _resolved(Path(path).expanduser())
    header = _check_file(file)
    if busy_timeout_seconds is None:
        busy_timeout_seconds = LEGACY_BUSY_TIMEOUT_SECONDS
    private_copies.sweep()  # the copies killed runs left behind
    copy = _private_copy(file) if _needs_copy(file, header) else None
    engine: Engine | None = None
    try:  # from the moment the copy exists: an interrupt landing anywhere removes it
        read = file if copy is None else copy / file.name
        engine = read_only_engine(read, busy_timeout_seconds=busy_timeout_seconds)
        catalog = LegacyCatalog(file, engine, LegacyLayout.V2, copy)
        catalog.layout = _detect_layout(catalog)
        _check_integrity(catalog)
    except BaseException:
        if engine is not None:
            engine.dispose()
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
        raise
    log.debug("opened legacy catalog %s (layout %d)", file, catalog.layout)
    return catalog


def _resolved(file: Path) -> Path:
    try:
        return file.resolve()
    except RuntimeError:  # Python before 3.13 on a symbolic link loop
        raise _error(
            file, "is a symbolic link loop (it leads back to itself)", "give the file's real path"
        ) from None


def _needs_copy(file: Path, header: bytes) -> bool:
    """Whether a WAL-mode file must be read from a private copy.

    SQLite reads a WAL-mode database only through its ``-shm`` index: opened in
    place without one, even read-only, it creates ``-shm`` (and an empty
    ``-wal``) beside the file, or fails in a folder it cannot write. Both files
    exist while the legacy app runs (or after it was killed); then, in a
    writable folder, the file is read in place, sharing the app's locks. In
    every other case the file and its ``-wal`` are copied and the copy is read:
    a consistent snapshot, and nothing appears beside the legacy file.
    ``immutable=1`` would need no copy, but it skips the ``-wal``, where the
    newest rows may be. On a network file system the file is always copied:
    the ``-shm`` index is memory of the computer the legacy app runs on, which
    a reader on another computer cannot share (see ``modelvault.db.network``).
    """
    wal_mode = header[18:20] == b"\x02\x02"  # read and write format versions 2: WAL
    if not wal_mode:
        return False
    beside = [Path(f"{file}-wal"), Path(f"{file}-shm")]
    if not all(p.exists() for p in beside) or not os.access(file.parent, os.W_OK):
        return True
    return network_filesystem(file.parent) is not None


def _private_copy(file: Path) -> Path:
    """Copy the file and its ``-wal`` into a new private folder (named for this
    process, see ``private_copies``); returns the folder.

    A copy whose sources changed while it was made (the legacy app wrote) is
    made again, so it is never a torn mix of two states.
    """
    folder = private_copies.new_folder()
    try:
        for _attempt in range(COPY_ATTEMPTS):
            before = _states(file)
            for source in (file, Path(f"{file}-wal")):
                if source.exists():
                    shutil.copyfile(source, folder / source.name)
            if _states(file) == before:
                return folder
        raise _error(
            file,
            "kept changing while it was being copied to be read",
            "close the legacy app and try again",
        )
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise _error(
            file, f"cannot be copied to be read ({exc.strerror or exc})", "check its permissions"
        ) from exc
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _states(file: Path) -> list[tuple[int, int] | None]:
    states: list[tuple[int, int] | None] = []
    for part in (file, Path(f"{file}-wal")):
        try:
            stat = part.stat()
            states.append((stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            states.append(None)
    return states


def _check_integrity(catalog: LegacyCatalog) -> None:
    """``PRAGMA quick_check``: a damaged file is refused before anything is written."""
    problems = [str(row[0]) for row in catalog._query("PRAGMA quick_check(1)")]
    if problems != ["ok"]:
        first = problems[0] if problems else "no answer from the integrity check"
        first = " ".join(first.replace("*** in database main ***", "").split())  # one line
        raise _error(catalog.path, f"is damaged ({first})", "restore it from a backup")


def read_only_engine(file: Path, *, busy_timeout_seconds: float) -> Engine:
    """An engine that can only read ``file``: a ``mode=ro`` URI, and ``query_only`` too."""
    url = URL.create("sqlite", database=sqlite_uri(file), query={"mode": "ro", "uri": "true"})
    engine = create_engine(url, connect_args={"timeout": busy_timeout_seconds})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")

    return engine


def _check_file(file: Path) -> bytes:
    """Everything that can be told from the file itself, before SQLite opens it;
    returns its header."""
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise _error(file, "does not exist", "check the path") from None
    except OSError as exc:
        raise _error(file, path_problem(exc), "check the path and its permissions") from exc
    if file.is_dir():
        hint = file / LEGACY_FILE_NAME
        what_to_do = (
            f"did you mean {hint}?"
            if hint.is_file()
            else f"give the {LEGACY_FILE_NAME} file inside it"
        )
        raise _error(file, "is a folder, not a file", what_to_do)
    if not file.is_file():
        raise _error(file, "is not a regular file", "give the path of the legacy catalog file")
    try:
        with file.open("rb") as handle:
            header = handle.read(HEADER_SIZE)
    except OSError as exc:
        raise _error(
            file, f"cannot be read ({exc.strerror or exc})", "check its permissions"
        ) from exc
    _check_header(file, header, stat.st_size)
    return header


def _check_header(file: Path, header: bytes, size: int) -> None:
    if size == 0:
        raise _error(file, "is empty", "give the legacy catalog file that holds your models")
    if not header.startswith(SQLITE_MAGIC[: len(header)]) or not header:
        raise _error(
            file, "is not a SQLite database, or it is encrypted", "give the legacy catalog file"
        )
    if len(header) < HEADER_SIZE:
        raise _error(
            file, "is truncated (shorter than a SQLite header)", "restore it from a backup"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise _error(file, "has a damaged SQLite header", "restore it from a backup")
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header is trustworthy only when its "valid-for"
    # counter matches the change counter (older SQLite versions did not keep it),
    # and when no WAL may hold the rest (a checkpoint cut short by a crash).
    count_valid = header[24:28] == header[92:96] and not _has_wal(file)
    if size % page_size or (count_valid and size < pages * page_size):
        raise _error(
            file,
            f"is truncated ({size} bytes, but its header says {pages * page_size})",
            "restore it from a backup",
        )


def _has_wal(file: Path) -> bool:
    try:
        return Path(f"{file}-wal").stat().st_size > 0
    except OSError:
        return False


def _detect_layout(catalog: LegacyCatalog) -> LegacyLayout:
    file = catalog.path
    tables = {
        name
        for (name,) in catalog._query(
            "SELECT name FROM sqlite_master "
            "WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
    }
    if tables >= V3_TABLES:
        raise _error(
            file,
            "is a modelvault catalog, not a legacy one",
            f"give the legacy {LEGACY_FILE_NAME} file",
        )
    missing = sorted(TABLES - tables)
    if missing:
        raise _error(
            file,
            f"has no {', '.join(missing)} table{'s' if len(missing) > 1 else ''}, "
            "so it is not a legacy catalog",
            f"give the legacy {LEGACY_FILE_NAME} file",
        )
    extra = sorted(tables - TABLES)
    if extra:
        raise _error(
            file,
            f"has tables a legacy catalog never had ({', '.join(extra)})",
            f"give an unmodified legacy {LEGACY_FILE_NAME} file",
        )
    for table, expected in TABLE_COLUMNS.items():
        _check_columns(catalog, table, expected, None)
    versions = {row[0] for row in catalog._query("SELECT version FROM schema_version")}
    if len(versions) != 1:
        state = (
            "no schema version"
            if not versions
            else f"several schema versions ({_listing(versions)})"
        )
        raise _error(file, f"has {state}", "give an unmodified legacy catalog file")
    (version,) = versions
    if version not in (1, 2) or isinstance(version, bool):
        raise _error(
            file,
            f"has schema_version {version!r}, and only legacy layouts 1 and 2 are known",
            "check that it is the legacy catalog, or update modelvault",
        )
    layout = LegacyLayout(version)
    _check_columns(catalog, "models", LEGACY_MODEL_COLUMNS[layout], layout)
    return layout


def _check_columns(
    catalog: LegacyCatalog, table: str, expected: frozenset[str], layout: LegacyLayout | None
) -> None:
    columns = {row[1] for row in catalog._query(f"PRAGMA table_info({table})")}
    if columns == expected:
        return
    known = f"layout {int(layout)}'s " if layout is not None else "the legacy "
    details = []
    if expected - columns:
        details.append(f"lacks {_listing(expected - columns)}")
    if columns - expected:
        details.append(f"has unknown {_listing(columns - expected)}")
    raise _error(
        catalog.path,
        f"has a {table} table unlike {known}one (it {' and '.join(details)})",
        "give an unmodified legacy catalog file",
    )


def _listing(values: set[Any] | frozenset[Any]) -> str:
    return ", ".join(sorted(str(v) for v in values))


def _read_error(file: Path, exc: BaseException) -> LegacyDatabaseError:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    message = str(orig).strip().lower()
    if "locked" in message or "busy" in message:
        return _error(
            file,
            "is locked by another program",
            "close the legacy app (or wait for it to finish writing) and try again",
        )
    if "not a database" in message or "encrypted" in message:
        return _error(
            file, "is not a SQLite database, or it is encrypted", "give the legacy catalog file"
        )
    if "malformed" in message or "corrupt" in message:
        return _error(
            file, "is damaged (the database image is malformed)", "restore it from a backup"
        )
    if "unable to open" in message:
        return _error(file, "cannot be opened", "check the file and folder permissions")
    return _error(file, f"cannot be read ({orig})", "check the file")


def _error(file: Path, what: str, what_to_do: str) -> LegacyDatabaseError:
    return LegacyDatabaseError(f"the legacy catalog {file} {what}: {what_to_do}.")
