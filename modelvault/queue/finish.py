"""Settle hashed files into the catalog and close their staging rows, in ONE
transaction that commits only for rows whose lease is still the worker's.

New content at a free path becomes a model in one statement for the whole
batch (``insert_models``); the rest (content or path the catalog holds, a later
copy in the batch) goes through ``catalog.settle.settle_file`` one by one. The rows
that became models are deleted, the others marked ``duplicate`` or
``conflict``, all under the lease guard.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from modelvault.catalog.settle import HashedFile, Outcome, Settled, settle_file
from modelvault.catalog.stamp_meta import SCAN_MTIME_NS, with_file_stat
from modelvault.catalog.tags import ensure_tags
from modelvault.database import DatabaseManager
from modelvault.db.types import utcnow
from modelvault.errors import CatalogError
from modelvault.file_stamp import FILE_STAT
from modelvault.identify.catalog import FOUND_KEYS, FoundFields, apply_found
from modelvault.pathkey import stored_key
from modelvault.presence import path_is_live as file_may_be_there
from modelvault.queue import states
from modelvault.queue.connection import HeldConnection, writing
from modelvault.queue.driver import json_list
from modelvault.queue.leases import Claim, LeaseLost, claim
from modelvault.queue.rows import ClaimedRow, StoredJSON, TagCache
from modelvault.queue.statements import MODEL_COLUMNS, MODELS, Statements, statements_for

__all__ = ["finish", "finish_batch", "insert_models"]

log = logging.getLogger(__name__)

# PostgreSQL errors after which the same transaction, run again, can succeed:
# a unique key taken by a concurrent commit, a deadlock, a serialization failure.
RETRYABLE_SQLSTATES = frozenset({"23505", "40P01", "40001"})
FINISH_TRIES = 5

IMPORTED = Settled(Outcome.IMPORTED)  # frozen: one for every new model
# Outcomes whose staging row is deleted: the file is a model now.
SETTLED_INTO_MODELS = (Outcome.IMPORTED, Outcome.MERGED, Outcome.MOVED, Outcome.REPLACED)

# SQLite's largest rowid is 2**63 - 1; a batch whose inserts could reach it is
# looked up first instead of told apart by rowid (see insert_models).
LAST_ROWID_BEFORE_LOOKUP = 2**62

# A column the worker gives no value (one added to the table later) gets its ORM default.
_DEFAULTS = {
    column.name: (
        column.default.arg if isinstance(column.default, ScalarElementColumnDefault) else None
    )
    for column in MODELS.columns
}
_SHA, _PATH, _KEY, _META = (MODEL_COLUMNS.index(c) for c in ("sha256", "path", "path_key", "meta"))


class _LeaseInDoubt(Exception):
    """A batch settled without looking first which rows are still held found one
    that is not: its transaction is rolled back, and the batch settled again,
    looking first."""


def finish(
    db: DatabaseManager,
    owner: str,
    row_id: int,
    item: HashedFile,
    *,
    policy: str,
    tag_cache: TagCache,
    path_is_live: Callable[[str], bool] = file_may_be_there,
) -> Settled | None:
    """``finish_batch`` for one row: its outcome, or None if the lease was lost."""
    outcomes, _ = finish_batch(
        db, owner, [(row_id, item)], policy=policy, tag_cache=tag_cache, path_is_live=path_is_live
    )
    return outcomes[row_id]


def finish_batch(
    db: DatabaseManager,
    owner: str,
    items: Sequence[tuple[int, HashedFile]],
    *,
    policy: str,
    tag_cache: TagCache,
    path_is_live: Callable[[str], bool] = file_may_be_there,
    claim_next: Claim | None = None,
    held: HeldConnection | None = None,
) -> tuple[dict[int, Settled | None], list[ClaimedRow]]:
    """Settle hashed files and close their staging rows, all in ONE transaction.

    For each row the model and its tags are written, then its staging row is
    deleted (or marked ``duplicate``/``conflict``) under the lease guard
    (claimed by ``owner``, lease running). Nearly always every row is still
    held, and the guard finds them all. If it misses one, the transaction is
    rolled back and the batch settled again, this time locking the rows still
    held first (``FOR UPDATE`` on PostgreSQL; SQLite's write lock is held from
    BEGIN), so no lease changes hands before the commit: rows whose lease was
    lost get None and nothing is written for them. A crash at any instant
    leaves, for every row, either the staging row or the finished model, never
    both and never neither.

    With ``claim_next`` the worker's next batch is claimed in the same
    transaction (one commit fewer per batch); it is returned with the outcomes.
    ``held``: the worker's own connection, if it keeps one (``HeldConnection``).

    ``tag_cache`` is only updated when the transaction commits, so an id that
    a rollback took back is never used again.
    """
    look_first = False  # which rows are still held: only once a lease was found lost
    failed_tries = 0
    while True:
        cache = tag_cache.copy()
        try:
            with writing(db, held) as conn, _LazySession(conn) as session:
                outcomes = _settle_batch(
                    conn, session, owner, items, policy, cache, path_is_live, look_first
                )
                session.flush()
                claimed = [] if claim_next is None else claim(conn, owner, claim_next)
        except _LeaseInDoubt:
            look_first = True  # rolled back: settle again, looking first (not a failed try)
            continue
        except LeaseLost:
            return {row_id: None for row_id, _ in items}, []
        except CatalogError as exc:
            failed_tries += 1
            if failed_tries == FINISH_TRIES or not _retryable(exc):
                raise
            # A concurrent worker committed the same model or tag first (or
            # PostgreSQL broke a deadlock): run again; the cache may hold ids of
            # tags that someone deleted meanwhile, so start it afresh.
            log.debug("finishing %d rows again after: %s", len(items), exc)
            tag_cache.clear()
            continue
        tag_cache.coloured, tag_cache.plain = cache.coloured, cache.plain
        return outcomes, claimed


class _LazySession:
    """An ORM session on the batch's connection, made only if something needs it.

    It joins the connection's transaction (one commit for everything); most
    batches of new files are written with Core statements alone.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._session: Session | None = None

    def get(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self.conn)
        return self._session

    def flush(self) -> None:
        if self._session is not None:
            self._session.flush()

    def __enter__(self) -> _LazySession:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._session is not None:
            self._session.close()


def _settle_batch(
    conn: Connection,
    session: _LazySession,
    owner: str,
    items: Sequence[tuple[int, HashedFile]],
    policy: str,
    cache: TagCache,
    path_is_live: Callable[[str], bool],
    look_first: bool,
) -> dict[int, Settled | None]:
    sql = statements_for(conn)
    ids = [row_id for row_id, _ in items]
    guard = {**sql.clock(), "owner": owner}  # one clock for every statement of the batch
    if look_first:
        mine = {row[0] for row in sql.fetch(conn, sql.lock_held, {**guard, "ids": json_list(ids)})}
    else:
        mine = set(ids)  # the lease guard of _close_rows checks them all (one round trip fewer)
    outcomes: dict[int, Settled | None] = dict.fromkeys(ids)
    todo = [(row_id, item) for row_id, item in items if row_id in mine]
    if not todo:
        return outcomes
    # New content at a free path becomes a model in one statement; the rest (content
    # or path the catalog holds, or a later copy in this batch) is settled one by one,
    # in batch order: the outcome each row would get on its own, in this order.
    inserted = _import_fresh(conn, sql, session, [item for _, item in todo], cache)
    others = []
    for row_id, item in todo:
        if item.path in inserted:
            outcomes[row_id] = IMPORTED
        else:
            others.append((row_id, item))
    for row_id, item in others:
        view = cache.view(item.tags)
        outcomes[row_id] = settle_file(
            session.get(), item, policy=policy, path_is_live=path_is_live, tag_cache=view
        )
        cache.learn(item.tags, view)
    settled = {row_id: outcomes[row_id] for row_id, _ in todo}
    files = dict(todo)
    session.flush()
    if _close_rows(conn, sql, guard, settled, files) != len(todo):
        if not look_first:
            raise _LeaseInDoubt
        raise LeaseLost("a lease changed hands under a lock")  # cannot happen; be safe
    return outcomes


def _import_fresh(
    conn: Connection,
    sql: Statements,
    session: _LazySession,
    items: Sequence[HashedFile],
    cache: TagCache,
) -> set[str]:
    """What ``settle_file`` does for new content at a free path, for many files at once.

    Every file is offered; a model goes in only where neither its sha256 nor its
    path (in any spelling: its key) is in the catalog yet (nor an earlier copy of
    its content in ``items``).
    Returns the paths of the models inserted: the other files are left to the
    caller. Models go in sha256 order and tags in name order, so concurrent
    batches take their locks in the same order.
    """
    stamp = sql.json_time(utcnow())
    rows = [_model_row(sql, item, stamp) for item in sorted(items, key=_item_sha)]
    inserted = insert_models(sql, conn, rows)
    if not inserted:
        return inserted
    done = [item for item in items if item.path in inserted]
    specs = sorted((spec for item in done for spec in item.tags), key=_spec_name)
    if not specs:
        return inserted
    view = cache.view(specs)
    if all(spec.name in view for spec in specs):
        tag_ids = view  # every tag known, none lacking a colour it is given: no query
    else:
        tag_ids = ensure_tags(session.get(), specs, view)
        cache.learn(specs, view)
    # What catalog.link_tags does, as one prepared statement.
    links = {(item.sha256, tag_ids[spec.name]) for item in done for spec in item.tags}
    _insert_links(sql, conn, sorted(links))
    return inserted


def _model_row(sql: Statements, item: HashedFile, stamp: str | None) -> list[Any]:
    """A new model's ``MODEL_COLUMNS`` values: times as ``json_time`` gives them, meta as a
    mapping."""
    base, meta = _fresh_fields(item)
    values = {
        "sha256": item.sha256,
        "path": item.path,
        "path_key": stored_key(item.path),
        "name": item.name,
        "type": item.type,
        "base": base,
        "size_bytes": item.size_bytes,
        "mtime_ns": item.mtime_ns,
        "created_at": stamp if item.created_at is None else sql.json_time(item.created_at),
        "updated_at": stamp,
        "meta": meta,
    }
    return [values.get(name, _DEFAULTS[name]) for name in MODEL_COLUMNS]


def _insert_links(sql: Statements, conn: Connection, links: list[tuple[str, int]]) -> None:
    """Link models to tags (a link that exists is left as it is)."""
    if not links:
        return
    if sql.postgresql:
        sql.change(conn, sql.insert_links, {"links": json.dumps(links)})
        return
    sql.run_many(conn, sql.insert_links, links)


_item_sha = operator.attrgetter("sha256")
_spec_name = operator.attrgetter("name")


def _fresh_fields(item: HashedFile) -> tuple[str | None, Mapping[str, Any]]:
    """A new model's base and meta: the item's, with the stamp of its file (``file_stat``)
    and what its header said (``found``)."""
    meta = item.meta
    if isinstance(meta, StoredJSON) and (  # holds no file_stat: see rows.read_meta
        item.found is None or not any(f'"{key}"' in meta.text for key in FOUND_KEYS)
    ):
        added: dict[str, Any] = {} if not item.file_stat else {FILE_STAT: dict(item.file_stat)}
        base = item.base
        if item.found is not None:
            fields = FoundFields(item.base, item.type, {})
            apply_found(fields, item.found)
            added.update(fields.meta)
            base = fields.base
        return base, meta.with_keys(added) if added else meta  # the rest stays text
    if item.file_stat:
        meta = with_file_stat(meta, item.file_stat)
    if item.found is None:
        return item.base, meta
    fields = FoundFields(item.base, item.type, dict(meta))
    apply_found(fields, item.found)
    return fields.base, fields.meta


def _close_rows(
    conn: Connection,
    sql: Statements,
    guard: dict[str, Any],
    settled: dict[int, Settled | None],
    files: dict[int, HashedFile],
) -> int:
    """Delete the rows that became models, mark the others ``duplicate`` or ``conflict``
    (one statement each: rare); returns the rows changed."""
    done = [
        row_id
        for row_id, result in settled.items()
        if result is not None and result.outcome in SETTLED_INTO_MODELS
    ]
    changed = 0
    if done:
        changed += sql.change(conn, sql.delete_held, {**guard, "ids": json_list(done)})
    for row_id, result in settled.items():
        if result is not None and row_id not in done:
            params = {**guard, **_kept_values(row_id, result, files[row_id])}
            changed += sql.change(conn, sql.close_held, params)
    return changed


def _kept_values(row_id: int, result: Settled, file: HashedFile) -> dict[str, Any]:
    """What a row kept as ``duplicate`` or ``conflict`` is closed with.

    The row keeps the stamp of the file that was hashed (size, mtime, ``file_stat``),
    so a folder scan finds the file unchanged and does not queue it again.
    """
    meta = {**file.meta, **(file.found or {}), SCAN_MTIME_NS: file.mtime_ns}
    return {
        "ids": json_list([row_id]),
        "new_status": states.DUPLICATE if result.outcome is Outcome.DUPLICATE else states.CONFLICT,
        "new_sha256": file.sha256,
        "new_error": result.reason,
        "new_size": file.size_bytes,
        "new_meta": json.dumps(with_file_stat(meta, file.file_stat)),
    }


def _retryable(exc: CatalogError) -> bool:
    cause = exc.__cause__
    if isinstance(cause, IntegrityError) and cause.orig is not None:
        return getattr(cause.orig, "sqlstate", None) == "23505"
    if isinstance(cause, DBAPIError) and cause.orig is not None:
        return getattr(cause.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
    return False


def insert_models(sql: Statements, conn: Connection, rows: list[list[Any]]) -> set[str]:
    """Insert the models of the files whose content and path (key) the catalog has never
    seen (``MODEL_COLUMNS`` values each, times as ``json_time`` gives them, meta as a
    dict); returns their paths. A later copy of content earlier in ``rows`` is not new.
    """
    if not rows:
        return set()
    if sql.postgresql:
        # ensure_ascii=False: a string the driver cannot encode (a lone surrogate)
        # fails as it would as a parameter of its own, not stored as an escape.
        payload = json.dumps(rows, ensure_ascii=False)
        return set(conn.exec_driver_sql(sql.insert_models, {"rows": payload}).scalars().all())
    for row in rows:
        meta = row[_META]
        row[_META] = meta.text if isinstance(meta, StoredJSON) else json.dumps(meta)
    # SQLite: usually every file is new, and inserting them all, skipping none, is
    # one statement (ON CONFLICT DO NOTHING counts only the rows it inserted). If one
    # was skipped, the rows past the table's last rowid before are the new ones: the
    # write lock is held since BEGIN, nobody else inserts meanwhile, and SQLite gives
    # a new row the last rowid + 1 (while it is below the largest one; else a
    # look-up decides first). A savepoint to take them back cost more than the
    # insert; executemany takes no RETURNING; one INSERT ... SELECT from json_each
    # parses each row's JSON again for every column, twice slower.
    ((last,),) = sql.fetch(conn, "SELECT max(rowid) FROM models", {})
    last = last or 0
    if last >= LAST_ROWID_BEFORE_LOOKUP:
        rows = _not_in_catalog(sql, conn, rows)
    if not rows:
        return set()
    if sql.run_many(conn, sql.insert_models, rows) == len(rows):
        return {row[_PATH] for row in rows}
    return {path for (path,) in sql.fetch(conn, sql.inserted_since, {"last": last})}


def _not_in_catalog(sql: Statements, conn: Connection, rows: list[list[Any]]) -> list[list[Any]]:
    """The rows whose sha256 and path key the catalog does not hold, nor an earlier row."""
    params = {
        "shas": json_list([row[_SHA] for row in rows]),
        "paths": json_list([row[_PATH] for row in rows]),
        "keys": json_list([row[_KEY] for row in rows if row[_KEY] is not None]),
    }
    known_shas: set[str] = set()
    known_keys: set[str] = set()
    for sha, key in sql.fetch(conn, sql.known, params):
        known_shas.add(sha)
        known_keys.add(key)
    fresh = []
    for row in rows:
        key = row[_PATH] if row[_KEY] is None else row[_KEY]  # path_key, or the path itself
        if row[_SHA] not in known_shas and key not in known_keys:
            known_shas.add(row[_SHA])
            known_keys.add(key)
            fresh.append(row)
    return fresh
