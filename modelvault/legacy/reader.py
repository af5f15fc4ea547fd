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

import functools
import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from modelvault.legacy import link_reads, private_copies
from modelvault.legacy.file import (
    check_file,
    needs_copy,
    private_copy,
    read_error,
    read_only_engine,
    resolved,
)
from modelvault.legacy.layout import (
    LAYOUT1_ONLY_COLUMNS,
    LAYOUT2_MODEL_COLUMNS,
    LegacyBatch,
    LegacyLayout,
    LegacyRow,
    LegacyTagRow,
    NotUtf8Text,
    check_integrity,
    detect_layout,
    keyed_as_made,
    link_model_affinity,
)
from modelvault.legacy.order import HashOrder, bucket_digits

log = logging.getLogger(__name__)

# The legacy app's transactions are short; waiting longer than this for its lock
# means it holds the file exclusively, and the user is better told so.
LEGACY_BUSY_TIMEOUT_SECONDS = 2.0


def _model_columns(layout: LegacyLayout, table: str = "") -> str:
    """The columns of a ``LegacyRow``, NULL for those the layout lacks."""
    layout1 = LAYOUT1_ONLY_COLUMNS if layout is LegacyLayout.V1 else ()
    columns = [f"{table}{column}" for column in LAYOUT2_MODEL_COLUMNS + layout1]
    return ", ".join(columns + ["NULL"] * (4 - len(layout1)))


def _select_models(layout: LegacyLayout) -> str:
    return f"SELECT {_model_columns(layout)} FROM models WHERE id > ? ORDER BY id LIMIT ?"


# The ordering reads (see order.HashOrder.add).
_IDS_HASHES_AND_PATHS = "SELECT id, hash_hex, path FROM models WHERE id > ? ORDER BY id LIMIT ?"


def _select_models_listed(layout: LegacyLayout) -> str:
    """The models whose ids a JSON array lists, in any order (``json_each`` has
    columns named ``id`` and ``path`` too: every column is the model's)."""
    return (
        f"SELECT {_model_columns(layout, 'm.')} FROM json_each(?) AS j "
        "CROSS JOIN models AS m ON m.id = j.value"
    )


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
        ``layout.keyed_as_made``) is read in the order of the stored hashes, which
        the catalog's keys are in (see ``order``; 1,000,000 rows: a fifth
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
        possible = in_hash_order and keyed_as_made(self._query, self._link_columns)
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
        yield from link_reads.links_of_no_listed_model(self.reading, order.ids)
        yield from self._batches_by_id(size, after=order.ids.last)

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

    def _listed_batch(
        self, select_models: str, ids: list[int], *, tolerant: bool
    ) -> tuple[LegacyBatch, int]:
        """The models of ``ids``, in that order, with their links; and how many of
        ``ids`` the batch covers (fewer when their links exceed ``LINKS_PER_BATCH``:
        the models before the one whose links may not all have come, or, when the
        first one alone has more, that model with all its links)."""
        listed = json.dumps(ids)
        with self.reading(tolerant=tolerant) as cursor:
            rows = list(map(LegacyRow._make, cursor.execute(select_models, (listed,)).fetchall()))
            position = {id_: number for number, id_ in enumerate(ids)}
            rows.sort(key=lambda row: position[row.id])
            links = link_reads.listed_links(
                cursor, listed, position, link_reads.LINKS_PER_BATCH + 1
            )
            covered = len(ids)
            if len(links) > link_reads.LINKS_PER_BATCH:
                covered = position[links[link_reads.LINKS_PER_BATCH][0]]
                if covered == 0:  # the first model alone has more: it comes with all of them
                    covered = 1
                    links = link_reads.listed_links(cursor, json.dumps(ids[:1]), position, None)
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
            budget = link_reads.LINKS_PER_BATCH
            try:
                batch = self._batch(select_models, last_id, size, tolerant=False, budget=budget)
            except _NotUtf8:  # rare: read this batch again, the slower way that keeps bytes
                batch = self._batch(select_models, last_id, size, tolerant=True, budget=budget)
            if batch is None:
                break
            last_id = batch.rows[-1].id
            yield batch  # the caller may empty its lists once read: nothing here reads them again
        yield from link_reads.links_past(self.reading, self._link_key, last_id)

    @functools.cached_property
    def _link_key(self) -> str:
        """What the reads by range compare: ``model_id``, or ``+model_id`` where the
        column has TEXT affinity (a hand-made file). There SQLite would compare a
        number with it as text ('10' before '2') while the models come in number
        order, and a link could come in two ranges; ``+`` compares the values as
        stored, in the order the models come in (with no index: each such read
        scans the links)."""
        return "+model_id" if link_model_affinity(self._link_columns) == "TEXT" else "model_id"

    @functools.cached_property
    def _link_columns(self) -> list[Any]:
        return self._query("PRAGMA table_info(model_tags)")

    def _batch(
        self,
        select_models: str,
        last_id: int | None,
        size: int,
        *,
        tolerant: bool,
        budget: int,
    ) -> LegacyBatch | None:
        with self.reading(tolerant=tolerant) as cursor:
            rows = cursor.execute(
                select_models, (_BEFORE_EVERY_ID if last_id is None else last_id, size)
            )
            batch = list(map(LegacyRow._make, rows.fetchall()))
            if not batch:
                return None
            ranges = link_reads.Ranges(cursor, self._link_key, last_id)
            links = ranges.links(batch[-1].id, budget + 1)
            if len(links) > budget:
                batch, links = ranges.cut(batch, links, budget)
        return LegacyBatch(batch, links)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.reading() as cursor:
            rows: list[Any] = cursor.execute(sql, params).fetchall()
        return rows

    @contextmanager
    def reading(self, *, tolerant: bool = True) -> Iterator[Any]:
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
            raise read_error(self.path, exc) from exc
        except (sqlite3.Error, DBAPIError) as exc:
            raise read_error(self.path, exc) from exc


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
    and ``-shm`` are both there and the folder is writable (see ``file.needs_copy``).
    """
    file = resolved(Path(path).expanduser())
    header = check_file(file)
    if busy_timeout_seconds is None:
        busy_timeout_seconds = LEGACY_BUSY_TIMEOUT_SECONDS
    private_copies.sweep()  # the copies killed runs left behind
    copy = private_copy(file) if needs_copy(file, header) else None
    engine: Engine | None = None
    try:  # from the moment the copy exists: an interrupt landing anywhere removes it
        read = file if copy is None else copy / file.name
        engine = read_only_engine(read, busy_timeout_seconds=busy_timeout_seconds)
        catalog = LegacyCatalog(file, engine, LegacyLayout.V2, copy)
        catalog.layout = detect_layout(file, catalog._query)
        check_integrity(file, catalog._query)
    except BaseException:
        if engine is not None:
            engine.dispose()
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
        raise
    log.debug("opened legacy catalog %s (layout %d)", file, catalog.layout)
    return catalog
