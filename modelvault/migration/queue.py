"""The staging table as a work queue: claim with a lease, renew, release, finish.

Every statement that changes a claimed row carries the same guard, "still
claimed by me and the lease has not run out", and its row count says whether
the change happened. A worker that lost its lease (it stalled past the expiry
and another worker took the row over) therefore can never finish, fail or
release a row that is no longer its own.

Per backend:

- PostgreSQL: the candidates are selected ``FOR UPDATE SKIP LOCKED``, so workers
  on many hosts claim disjoint rows without waiting for each other; a finish
  locks its rows ``FOR UPDATE`` before writing; new models go in with ``ON
  CONFLICT DO NOTHING`` so two hosts finishing copies of one file don't fail,
  the loser is settled as a duplicate. Times come from the server clock
  (``now()``), so hosts with skewed clocks agree on leases.
- SQLite: every writing transaction begins ``IMMEDIATE`` (the write lock is
  taken at BEGIN), so a claim's SELECT and UPDATE cannot interleave with another
  writer, and no transaction ever has to upgrade a read lock (which WAL refuses
  with SQLITE_BUSY instead of waiting). Threads of one process take turns on a
  lock of their own first (``writer_turn``). Times come from this process's
  clock. Needs SQLite 3.35+ (RETURNING).

None of these functions hash anything: the worker holds no transaction open
while it reads a file.
"""

from __future__ import annotations

import functools
import logging
import operator
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Interval,
    Table,
    and_,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from modelvault.catalog.settle import HashedFile, Outcome, Settled, settle_file
from modelvault.catalog.stamp_meta import SCAN_MTIME_NS, with_file_stat, without_scan_stat
from modelvault.catalog.tags import TagSpec, ensure_tags
from modelvault.database import DatabaseManager
from modelvault.db.engine import SQLITE_BEGIN
from modelvault.db.models import (
    FINAL_STATUSES,
    PendingImport,
    PendingStatus,
)
from modelvault.db.types import UTCDateTime, utcnow
from modelvault.errors import CatalogError, ModelVaultError, ValidationError
from modelvault.file_stamp import FILE_STAT
from modelvault.identify.catalog import FOUND_KEYS, FoundFields, apply_found
from modelvault.migration.queue_sql import BatchSQL, StoredJSON, batch_sql
from modelvault.pathkey import stored_key
from modelvault.presence import path_is_live as file_may_be_there

log = logging.getLogger(__name__)

TABLE = cast(Table, PendingImport.__table__)
COLUMNS = TABLE.c

PENDING = PendingStatus.PENDING.value
CLAIMED = PendingStatus.CLAIMED.value

# A batch stops growing once its files add up to this much, so a worker never
# sits on several multi-GB files that idle peers could be hashing. A row of
# unknown size counts as a full budget (it is most likely a big model file).
CLAIM_BYTE_BUDGET = 256 * 1024 * 1024

# PostgreSQL errors after which the same transaction, run again, can succeed:
# a unique key taken by a concurrent commit, a deadlock, a serialization failure.
RETRYABLE_SQLSTATES = frozenset({"23505", "40P01", "40001"})
FINISH_TRIES = 5

IMPORTED = Settled(Outcome.IMPORTED)  # frozen: one for every new model


@dataclass(frozen=True)
class ClaimedRow:
    """A staging row a worker holds, copied out of its session."""

    id: int
    path: str
    name: str
    type: str
    base: str | None
    size_bytes: int | None
    created_at: datetime | None
    meta: Mapping[str, Any]  # on SQLite, usually the stored text until read (StoredJSON)
    tags: Sequence[Any]  # as staged: {"name", "color"} entries (TagSpec.parse takes them)
    attempts: int
    source: str | None = None

    def hashed(
        self,
        sha256: str,
        size_bytes: int,
        mtime_ns: int,
        file_stat: Mapping[str, int] | None = None,
    ) -> HashedFile:
        """The catalog's view of this row once its content is known; ``file_stat``: the
        rest of the stamp the file had as it was hashed (see ``modelvault.file_stamp``).

        Tags go in name order so concurrent transactions on PostgreSQL insert
        shared tag names in the same order (no lock-order deadlock).
        """
        # sorted() is stable: a name given twice keeps its first colour in ensure_tags.
        specs = sorted(self.specs, key=_spec_name)
        return HashedFile(
            sha256=sha256,
            path=self.path,
            name=self.name,
            type=self.type,
            base=self.base,
            size_bytes=size_bytes,
            mtime_ns=mtime_ns,
            created_at=self.created_at,
            # Stored text holds no scan stamp (see BatchSQL.read_meta): left undecoded.
            meta=self.meta if isinstance(self.meta, StoredJSON) else without_scan_stat(self.meta),
            tags=specs,
            source=self.source,
            file_stat=file_stat,
        )

    @property
    def specs(self) -> list[TagSpec]:
        """The staged tags, parsed once; ``ValidationError`` if one can never be stored."""
        # Kept in the instance's dict by hand: functools.cached_property takes a lock
        # on every first read in Python 3.11, a cost paid for every row.
        specs: list[TagSpec] | None = self.__dict__.get("_specs")
        if specs is None:
            specs = self.__dict__["_specs"] = [_parse_tag(entry) for entry in self.tags]
        return specs

    def tag_problem(self) -> ValidationError | None:
        """Why the staged tags can never be stored, or None if they can."""
        try:
            self.specs  # noqa: B018 (parses and caches)
        except ValidationError as exc:
            return exc
        return None


_spec_name = operator.attrgetter("name")


def _parse_tag(entry: Any) -> TagSpec:
    """``TagSpec.parse``, remembered for the usual staged form (a few names used again
    and again)."""
    if isinstance(entry, dict) and entry.keys() <= {"name", "color"}:
        name, color = entry.get("name"), entry.get("color")
        if isinstance(name, str) and (color is None or isinstance(color, str)):
            return _parse_named_tag(name, color)
    return TagSpec.parse(entry)


@functools.lru_cache(maxsize=4096)
def _parse_named_tag(name: str, color: str | None) -> TagSpec:
    return TagSpec.parse({"name": name, "color": color})  # a refusal raises, and is not kept


class Statements:
    """The queue's statements for one backend, built once.

    Building a statement costs more than SQLite takes to run it, so each is
    built once per backend with bind parameters: ``now``/``until`` (SQLite,
    this process's clock) or ``lease``/``delay`` intervals added to the
    server's ``now()`` (PostgreSQL), ``ids`` (an expanding list), ``owner``.
    """

    def __init__(self, postgresql: bool) -> None:
        self.postgresql = postgresql
        if postgresql:
            now: Any = func.now()
            until: Any = func.now() + bindparam("lease", type_=Interval())
            retry_at: Any = func.now() + bindparam("delay", type_=Interval())
        else:
            now = bindparam("now", type_=UTCDateTime())
            until = bindparam("until", type_=UTCDateTime())
            retry_at = bindparam("retry_at", type_=UTCDateTime())
        ids: Any = bindparam("ids", expanding=True)
        guard = held(bindparam("owner"), ids, now)
        closed = {"claimed_by": None, "lease_expires_at": None}
        self.renew = update(TABLE).where(guard).values(lease_expires_at=until).returning(COLUMNS.id)
        self.release = (
            update(TABLE)
            .where(
                COLUMNS.id.in_(ids),
                COLUMNS.status == CLAIMED,
                COLUMNS.claimed_by == bindparam("owner"),
            )
            .values(status=PENDING, not_before=None, **closed)
            .returning(COLUMNS.id)
        )
        settled_values: dict[str, Any] = {
            "status": bindparam("new_status"),
            "sha256": bindparam("new_sha256"),
            "last_error": bindparam("new_error"),
            "size_bytes": bindparam("new_size"),
            "meta": bindparam("new_meta", type_=TABLE.c.meta.type),
            "not_before": None,
        }
        self.close_held = update(TABLE).where(guard).values(**settled_values, **closed)
        failed_values: dict[str, Any] = {
            "status": bindparam("new_status"),
            "attempts": bindparam("new_attempts"),
            "last_error": bindparam("new_error"),
        }
        self.fail = update(TABLE).where(guard).values(**failed_values, not_before=None, **closed)
        self.retry = (
            update(TABLE).where(guard).values(**failed_values, not_before=retry_at, **closed)
        )

    def params(self, lease_seconds: float = 0.0, delay_seconds: float = 0.0) -> dict[str, Any]:
        """The clock parameters: ``until`` is now + lease, ``retry_at`` now + delay."""
        if self.postgresql:
            return {
                "lease": timedelta(seconds=lease_seconds),
                "delay": timedelta(seconds=delay_seconds),
            }
        now = utcnow()
        return {
            "now": now,
            "until": now + timedelta(seconds=lease_seconds),
            "retry_at": now + timedelta(seconds=delay_seconds),
        }


@functools.cache
def _statements_for(postgresql: bool) -> Statements:
    return Statements(postgresql)


def statements(bind: Connection | Session) -> Statements:
    dialect = bind.get_bind().dialect if isinstance(bind, Session) else bind.dialect
    return _statements_for(dialect.name == "postgresql")


def held(owner: Any, ids: Any, now: Any) -> ColumnElement[bool]:
    """The guard of every change to a claimed row: still mine, lease still running."""
    return and_(
        COLUMNS.id.in_(ids),
        COLUMNS.status == CLAIMED,
        COLUMNS.claimed_by == owner,
        COLUMNS.lease_expires_at > now,
    )


@contextmanager
def transaction(db: DatabaseManager) -> Iterator[Connection]:
    """A connection in one writing transaction (``BEGIN IMMEDIATE`` on SQLite).

    Plain Core, no ORM session: these transactions are the per-row overhead.
    """
    with writer_turn(db), db.translate_errors(), db.engine.connect() as conn:
        conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            yield conn


# How long a worker's own connection may sit unused before it goes back to the pool,
# to be checked again (on PostgreSQL: pinged) before its next transaction.
HELD_IDLE_SECONDS = 1.0


class HeldConnection:
    """One connection a worker keeps between its batches, for its hot path.

    A batch of tiny files takes milliseconds; taking a connection from the pool
    for each one (and on PostgreSQL pinging it first) costs a noticeable part of
    that. So back-to-back transactions reuse this one. It goes back to the pool,
    and a fresh one (pinged as usual) is taken, once it sat unused for
    ``HELD_IDLE_SECONDS`` (a server restarted meanwhile is then noticed as
    before) or after a failure that invalidated it. Errors are translated as by
    ``transaction``; ``close()`` hands the connection back. One thread only.
    """

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db
        self._conn: Connection | None = None
        self._last_used = 0.0

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """``transaction(db)`` on the held connection."""
        with writer_turn(self.db), self.db.translate_errors():
            conn = self._connection()
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                if conn.invalidated:  # a lost connection: the next transaction takes another
                    self.close()
                raise
            finally:
                self._last_used = time.monotonic()

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is not None and time.monotonic() - self._last_used > HELD_IDLE_SECONDS:
            self.close()
            conn = None
        if conn is None:
            conn = self._conn = self.db.engine.connect()
            conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        return conn

    def close(self) -> None:
        """Hand the connection back to the pool (a broken one is discarded)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # nothing is open on it; a broken one is dropped
                conn.close()


def _transaction(
    db: DatabaseManager, held: HeldConnection | None
) -> AbstractContextManager[Connection]:
    return transaction(db) if held is None else held.transaction()


_sqlite_writers: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_sqlite_writers_lock = threading.Lock()


def writer_turn(db: DatabaseManager) -> AbstractContextManager[Any]:
    """Take turns, within this process, to write to a SQLite catalog.

    SQLite has one writer at a time; a connection that finds the write lock
    taken polls for it, sleeping up to tens of milliseconds between tries, so
    workers of one pool that collide lose far more time than the writes take.
    Threads of one process therefore queue on a lock of their own, which wakes
    the next one at once. (Processes still meet SQLite's busy timeout.)
    PostgreSQL has row locks: no turns.
    """
    if not db.is_sqlite:
        return nullcontext()
    with _sqlite_writers_lock:
        lock = _sqlite_writers.get(db.engine)
        if lock is None:
            lock = _sqlite_writers[db.engine] = threading.Lock()
    return lock


def within_budget(
    candidates: Sequence[tuple[int, int | None]], budget: int, min_bytes: int = 0
) -> list[int]:
    """The ids of the first candidates whose sizes fit ``budget`` (always at least one),
    or none if they add up to less than ``min_bytes``. A row of unknown size counts as
    the whole budget (it is most likely a big model file)."""
    ids: list[int] = []
    total = 0
    for row_id, size in candidates:
        weight = budget if size is None else size
        if ids and total + weight > budget:
            break
        ids.append(row_id)
        total += weight
    return ids if total >= min_bytes else []


def batch_bytes(rows: Iterable[ClaimedRow], budget: int = CLAIM_BYTE_BUDGET) -> int:
    """What a batch weighs for ``within_budget``: staged sizes, unknown ones as ``budget``."""
    return sum(budget if row.size_bytes is None else row.size_bytes for row in rows)


@dataclass(frozen=True)
class Claim:
    """What to claim: up to ``limit`` rows, within ``byte_budget``, for ``lease_seconds``;
    nothing if the oldest claimable rows add up to less than ``min_bytes``."""

    limit: int
    lease_seconds: float
    byte_budget: int = CLAIM_BYTE_BUDGET
    min_bytes: int = 0


def claim_batch(
    db: DatabaseManager,
    owner: str,
    *,
    limit: int,
    lease_seconds: float,
    byte_budget: int = CLAIM_BYTE_BUDGET,
    min_bytes: int = 0,
    held: HeldConnection | None = None,
) -> list[ClaimedRow]:
    """Take up to ``limit`` claimable rows (oldest first) under a lease of ``owner``
    (none if they add up to less than ``min_bytes``: see ``Claim``), on ``held`` if given."""
    with _transaction(db, held) as conn:
        return _claim(conn, owner, Claim(limit, lease_seconds, byte_budget, min_bytes))


def _claim(conn: Connection, owner: str, claim: Claim) -> list[ClaimedRow]:
    sql = batch_sql(conn.dialect.name == "postgresql")
    clock = sql.clock(claim.lease_seconds)
    candidates = sql.fetch(conn, sql.candidates, {**clock, "limit": claim.limit})
    ids = within_budget([(r[0], r[1]) for r in candidates], claim.byte_budget, claim.min_bytes)
    if not ids:
        return []
    params = {**clock, "ids": sql.many(ids), "owner": owner}
    claimed = [
        ClaimedRow(
            id=row_id,
            path=path,
            name=name,
            type=kind,
            base=base,
            size_bytes=size,
            created_at=sql.read_time(created),
            meta=sql.read_meta(meta),
            tags=sql.read_tags(tags),
            attempts=attempts,
            source=source,
        )
        for row_id, path, name, kind, base, size, created, meta, tags, attempts, source in (
            sql.fetch(conn, sql.claim, params)  # one fetch, not one per row
        )
    ]
    return sorted(claimed, key=lambda row: row.id)


def renew(db: DatabaseManager, owner: str, ids: Collection[int], lease_seconds: float) -> set[int]:
    """Extend the leases still held; returns the ids that are (the rest are lost)."""
    if not ids:
        return set()
    with transaction(db) as conn:
        sql = statements(conn)
        params = {**sql.params(lease_seconds), "ids": list(ids), "owner": owner}
        return {row_id for (row_id,) in conn.execute(sql.renew, params)}


def release(db: DatabaseManager, owner: str, ids: Collection[int]) -> set[int]:
    """Hand rows back to the queue untouched (attempts unchanged); returns the ids handed back.

    An expired lease nobody took over yet is still released: the row is ours
    until another claim says otherwise, and handing it back makes it claimable
    at once instead of at expiry. The ids missing from the answer were taken
    over by another worker.
    """
    if not ids:
        return set()
    with transaction(db) as conn:
        params = {"ids": list(ids), "owner": owner}
        return set(conn.scalars(statements(conn).release, params))


def take_over_orphans(
    db: DatabaseManager, owner_prefix: str, is_dead: Callable[[str], bool]
) -> int:
    """Hand back the rows of owners (named ``owner_prefix...``) that ``is_dead``; returns how many.

    Their leases may run for long yet; a worker that provably died will never
    renew or release them. Only reads unless there is something to take over.
    """
    claimed = (COLUMNS.status == CLAIMED) & COLUMNS.claimed_by.startswith(
        owner_prefix, autoescape=True
    )
    with db.session_scope() as session:
        owners = session.scalars(select(COLUMNS.claimed_by).where(claimed).distinct()).all()
    dead = [owner for owner in owners if owner is not None and is_dead(owner)]
    if not dead:
        return 0
    with transaction(db) as conn:
        result = conn.execute(
            update(TABLE)
            .where(COLUMNS.status == CLAIMED, COLUMNS.claimed_by.in_(dead))
            .values(status=PENDING, not_before=None, claimed_by=None, lease_expires_at=None)
        )
        taken = _rowcount(result)
    log.info("handed back %d rows of %d workers that died: %s", taken, len(dead), dead)
    return taken


def record_failure(
    db: DatabaseManager,
    owner: str,
    row: ClaimedRow,
    message: str,
    *,
    max_attempts: int,
    backoff_seconds: float,
    final: bool = False,
) -> str | None:
    """Count a failed attempt: back to ``pending`` after a back-off, or ``failed``.

    The back-off doubles with each attempt. ``final`` fails the row at once
    (for errors no retry can cure). Returns the new status, or None if the
    lease was lost (then the row is someone else's and nothing was written).
    """
    attempts = row.attempts + 1
    status = PendingStatus.FAILED.value if final or attempts >= max_attempts else PENDING
    delay = backoff_seconds * 2 ** (attempts - 1)
    with transaction(db) as conn:
        sql = statements(conn)
        result = conn.execute(
            sql.retry if status == PENDING else sql.fail,
            {
                **sql.params(delay_seconds=delay),
                "ids": [row.id],
                "owner": owner,
                "new_status": status,
                "new_attempts": attempts,
                "new_error": message,
            },
        )
        return status if _rowcount(result) == 1 else None


def mark_missing(db: DatabaseManager, owner: str, row: ClaimedRow, message: str) -> bool:
    """The file is gone: keep the row (tags, notes) as ``missing``. False if the lease was lost."""
    with transaction(db) as conn:
        sql = statements(conn)
        result = conn.execute(
            sql.fail,
            {
                **sql.params(),
                "ids": [row.id],
                "owner": owner,
                "new_status": PendingStatus.MISSING.value,
                "new_attempts": row.attempts + 1,
                "new_error": message,
            },
        )
        return _rowcount(result) == 1


class TagCache:
    """Tag ids the worker has seen, so most batches need no tag query at all.

    ``catalog.ensure_tags`` skips every name found in the cache it is given,
    and with it the filling-in of a colour the tag lacks. So a name is offered
    as cached only when no colour is wanted for it, or when its tag is known to
    have one (it cannot lose it: colours are filled, never cleared). That way
    the catalog ends the same whether or not a restart emptied the cache.
    """

    def __init__(self) -> None:
        self.coloured: dict[str, int] = {}  # tags known to have a colour
        self.plain: dict[str, int] = {}  # tags that may have none

    def view(self, specs: Iterable[TagSpec]) -> dict[str, int]:
        """A cache for ``ensure_tags``/``settle_file`` asked for ``specs``."""
        want_colour = {spec.name for spec in specs if spec.color is not None}
        view = dict(self.coloured)
        view.update((n, i) for n, i in self.plain.items() if n not in want_colour)
        return view

    def learn(self, specs: Iterable[TagSpec], view: dict[str, int]) -> None:
        """Remember what ``view`` holds now that ``specs`` were ensured with it."""
        for spec in specs:
            tag_id = view.get(spec.name)
            if tag_id is None:
                continue
            if spec.color is not None:  # it has a colour now: its own, or this one
                self.coloured[spec.name] = tag_id
                self.plain.pop(spec.name, None)
            elif spec.name not in self.coloured:
                self.plain[spec.name] = tag_id

    def copy(self) -> TagCache:
        other = TagCache()
        other.coloured, other.plain = dict(self.coloured), dict(self.plain)
        return other

    def clear(self) -> None:
        self.coloured.clear()
        self.plain.clear()


class LeaseLost(ModelVaultError):
    """The row was taken over by another worker; this one must let it go."""


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
            with _transaction(db, held) as conn, _LazySession(conn) as session:
                outcomes = _settle_batch(
                    conn, session, owner, items, policy, cache, path_is_live, look_first
                )
                session.flush()
                claimed = [] if claim_next is None else _claim(conn, owner, claim_next)
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
    sql = batch_sql(conn.dialect.name == "postgresql")
    ids = [row_id for row_id, _ in items]
    guard = {**sql.clock(), "owner": owner}
    if look_first:
        mine = {row[0] for row in sql.fetch(conn, sql.lock_held, {**guard, "ids": sql.many(ids)})}
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
    sql: BatchSQL,
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
    time = sql.json_time
    inserted = sql.insert_models_run(
        conn,
        [
            [
                item.sha256,
                item.path,
                stored_key(item.path),
                item.name,
                item.type,
                base,
                item.size_bytes,
                item.mtime_ns,
                stamp if item.created_at is None else time(item.created_at),
                stamp,
                meta,
            ]
            for item in sorted(items, key=_item_sha)
            for base, meta in [_fresh_fields(item)]
        ],
    )
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
    sql.insert_links_run(conn, sorted(links))
    return inserted


_item_sha = operator.attrgetter("sha256")


def _fresh_fields(item: HashedFile) -> tuple[str | None, Mapping[str, Any]]:
    """A new model's base and meta: the item's, with what its header said (``found``)."""
    meta = _model_meta(item)
    if item.found is None:
        return item.base, meta
    if isinstance(meta, StoredJSON) and not any(f'"{key}"' in meta.text for key in FOUND_KEYS):
        fields = FoundFields(item.base, item.type, {})
        apply_found(fields, item.found)
        for key, value in fields.meta.items():  # the rest stays text, not decoded
            meta = meta.with_key(key, value)
        return fields.base, meta
    fields = FoundFields(item.base, item.type, dict(meta))
    apply_found(fields, item.found)
    return fields.base, fields.meta


def _model_meta(item: HashedFile) -> Mapping[str, Any]:
    """A new model's meta: the item's, with the stamp of its file (``file_stat``)."""
    if not item.file_stat:
        return item.meta
    if isinstance(item.meta, StoredJSON):  # holds no file_stat: see BatchSQL.read_meta
        return item.meta.with_key(FILE_STAT, dict(item.file_stat))
    return with_file_stat(item.meta, item.file_stat)


def _close_rows(
    conn: Connection,
    sql: BatchSQL,
    guard: dict[str, Any],
    settled: dict[int, Settled | None],
    files: dict[int, HashedFile],
) -> int:
    """Delete the rows that became models, mark the others; returns the rows changed."""
    done = [
        row_id
        for row_id, result in settled.items()
        if result is not None
        and result.outcome in (Outcome.IMPORTED, Outcome.MERGED, Outcome.MOVED, Outcome.REPLACED)
    ]
    changed = 0
    if done:
        params = {**guard, "ids": sql.many(done)}
        changed += sql.change(conn, sql.delete_held, params)
    closing = {row_id: result for row_id, result in settled.items() if row_id not in done}
    if closing:
        changed += _mark_settled(conn, guard["owner"], closing, files)
    return changed


def _mark_settled(
    conn: Connection, owner: str, settled: dict[int, Settled | None], files: dict[int, HashedFile]
) -> int:
    """Mark the rows settled as ``duplicate`` or ``conflict`` (rare: Core is clear enough).

    The row keeps the stamp of the file that was hashed (size, mtime, ``file_stat``),
    so a folder scan finds the file unchanged and does not queue it again.
    """
    sql = statements(conn)
    guard = {**sql.params(), "owner": owner}
    changed = 0
    for row_id, result in settled.items():
        if result is None:
            continue
        status = (
            PendingStatus.DUPLICATE
            if result.outcome is Outcome.DUPLICATE
            else PendingStatus.CONFLICT
        )
        params = {
            **guard,
            "ids": [row_id],
            "new_status": status.value,
            "new_sha256": files[row_id].sha256,
            "new_error": result.reason,
            "new_size": files[row_id].size_bytes,
            "new_meta": with_file_stat(
                {
                    **files[row_id].meta,
                    **(files[row_id].found or {}),
                    SCAN_MTIME_NS: files[row_id].mtime_ns,
                },
                files[row_id].file_stat,
            ),
        }
        changed += _rowcount(conn.execute(sql.close_held, params))
    return changed


def _retryable(exc: CatalogError) -> bool:
    cause = exc.__cause__
    if isinstance(cause, IntegrityError) and cause.orig is not None:
        return getattr(cause.orig, "sqlstate", None) == "23505"
    if isinstance(cause, DBAPIError) and cause.orig is not None:
        return getattr(cause.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
    return False


def refresh_statistics(db: DatabaseManager) -> None:
    """PostgreSQL: bring the planner's statistics of the queue up to date before a run.

    The queue is filled in bulk just before the workers start, faster than
    autovacuum notices: with statistics of an empty or much smaller table,
    PostgreSQL picks plans that sort every pending row on each claim. One
    ANALYZE (a sample, not a scan) fixes that for the run. Nothing to do on
    SQLite, whose planner goes by the indexes alone. A failure is only logged:
    the workers are right without it, merely slower.
    """
    if db.is_sqlite:
        return
    try:
        with db.translate_errors(), db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE pending_import")
            conn.commit()
    except CatalogError as exc:
        log.warning("could not refresh the catalog's statistics: %s", exc)


@dataclass(frozen=True)
class QueueState:
    """What is left for the workers, seen at one instant."""

    unfinished: int  # rows pending or claimed
    wait_seconds: float | None  # until the next row may become claimable; None if none
    retry_files: int = 0  # rows waiting out a retry back-off
    retry_seconds: float | None = None  # until the first of them is due (0: due now)


def queue_state(db: DatabaseManager) -> QueueState:
    """How many rows are unfinished and how long until one may become claimable.

    Rows in back-off and rows leased by other workers (alive or dead) count as
    unfinished: a pool waits for them rather than leaving them behind.
    """
    pending = COLUMNS.status == PENDING
    with db.session_scope() as session:
        pg = session.get_bind().dialect.name == "postgresql"
        columns: list[Any] = [
            func.count(),
            func.count().filter(pending & COLUMNS.not_before.is_(None)),
            func.min(COLUMNS.not_before).filter(pending),
            func.min(COLUMNS.lease_expires_at).filter(COLUMNS.status == CLAIMED),
            func.count().filter(pending & COLUMNS.not_before.is_not(None)),
        ]
        if pg:
            columns.append(func.now())
        row = session.execute(select(*columns).where(COLUMNS.status.in_([PENDING, CLAIMED]))).one()
    count, ready, next_retry, next_expiry, retrying = row[:5]
    if not count:
        return QueueState(0, None)
    now: datetime = row[5] if pg else utcnow()
    retry = None if next_retry is None else max(0.0, (next_retry - now).total_seconds())
    due = [t for t in (next_retry, next_expiry) if t is not None]
    if ready or not due:
        return QueueState(count, 0.0, retrying, retry)
    return QueueState(count, max(0.0, (min(due) - now).total_seconds()), retrying, retry)


def retry_pending(db: DatabaseManager, statuses: Iterable[str] = ("failed", "missing")) -> int:
    """Put rows in the given final statuses back in the queue; returns how many.

    Attempts start again from zero, back-off and last error are cleared.
    """
    wanted = [str(s) for s in statuses]
    allowed = {s.value for s in FINAL_STATUSES}
    for status in wanted:
        if status not in allowed:
            raise ValidationError(
                f"{status!r} cannot be retried: use one of {', '.join(sorted(allowed))}."
            )
    if not wanted:
        return 0
    with db.session_scope(immediate=True) as session:
        result = session.execute(
            update(TABLE)
            .where(COLUMNS.status.in_(wanted))
            .values(
                status=PENDING,
                attempts=0,
                not_before=None,
                last_error=None,
                claimed_by=None,
                lease_expires_at=None,
            )
        )
        return _rowcount(result)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
