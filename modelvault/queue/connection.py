"""A worker's writing transactions: one connection it holds between batches, the
turns threads of one process take to write to SQLite, and the transactions
themselves (``BEGIN IMMEDIATE`` on SQLite).

SQLite: every writing transaction begins ``IMMEDIATE`` (the write lock is taken
at BEGIN), so a claim's SELECT and UPDATE cannot interleave with another writer,
and no transaction ever has to upgrade a read lock (which WAL refuses with
SQLITE_BUSY instead of waiting). Threads of one process take turns on a lock of
their own first (``writer_turn``).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any

from sqlalchemy import Connection, Engine

from modelvault.database import DatabaseManager
from modelvault.db.engine import SQLITE_BEGIN

__all__ = ["HELD_IDLE_SECONDS", "HeldConnection", "transaction", "writer_turn", "writing"]


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


def writing(db: DatabaseManager, held: HeldConnection | None) -> AbstractContextManager[Connection]:
    """A writing transaction: on the worker's ``held`` connection if it has one."""
    return transaction(db) if held is None else held.transaction()
