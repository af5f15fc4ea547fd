"""The rows a worker hashed and has not settled yet: settled together, in one
transaction, once they add up or have waited long enough (``Settler``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from modelvault.catalog.settle import Outcome, Settled
from modelvault.database import DatabaseManager
from modelvault.errors import ValidationError
from modelvault.file_stamp import stat_marks
from modelvault.hashing import FileDigest
from modelvault.migration.worker_events import Accounts
from modelvault.migration.worker_leases import LeaseKeeper
from modelvault.queue.connection import HeldConnection
from modelvault.queue.finish import finish_batch
from modelvault.queue.leases import Claim
from modelvault.queue.rows import ClaimedRow, TagCache

__all__ = ["FINISH_EVERY_BYTES", "FINISH_EVERY_SECONDS", "Settler"]

log = logging.getLogger("modelvault.migration.worker")

# Hashed rows are settled together once they add up to this much, or after this
# long, or at the end of their batch (one transaction for many tiny files).
FINISH_EVERY_BYTES = 64 * 1024 * 1024
FINISH_EVERY_SECONDS = 1.0

Hashed = tuple[ClaimedRow, FileDigest, dict[str, Any]]  # the row, its digest, what its header said


class Settler:
    """Hashed rows waiting to be settled into the catalog (see ``queue.finish``)."""

    def __init__(
        self,
        db: DatabaseManager,
        owner: str,
        policy: str,
        connection: HeldConnection,
        leases: LeaseKeeper,
        accounts: Accounts,
        give_up: Callable[[ClaimedRow, str], None],
    ) -> None:
        self.db = db
        self.owner = owner
        self.policy = policy
        self._connection = connection
        self._leases = leases
        self._accounts = accounts
        self._give_up = give_up  # fails a row for good: its data cannot be catalogued
        self._hashed: list[Hashed] = []
        self._bytes = 0  # the size of the files in _hashed
        self._since = 0.0  # when the first of them was hashed
        self._tag_cache = TagCache()

    def add(self, row: ClaimedRow, digest: FileDigest, found: dict[str, Any]) -> None:
        if not self._hashed:
            self._since = time.monotonic()
        self._hashed.append((row, digest, found))
        self._bytes += digest.size_bytes

    def due(self, now: float) -> bool:
        """Commit hashed rows once they add up, so a crash never costs much re-reading."""
        if not self._hashed:
            return False
        waited = now - (self._since or now)
        return self._bytes >= FINISH_EVERY_BYTES or waited >= FINISH_EVERY_SECONDS

    @property
    def waiting(self) -> bool:
        """Rows are hashed and not settled yet."""
        return bool(self._hashed)

    def settle(self, claim: Claim | None = None) -> list[ClaimedRow] | None:
        """Settle every hashed row in one transaction; with ``claim``, the next batch is
        claimed in it too, and returned (held already). None if no transaction claimed:
        nothing was hashed, or a row's data could not be catalogued."""
        hashed, self._hashed, self._bytes = self._hashed, [], 0
        if not hashed:
            return None
        items = [
            (row.id, row.hashed(d.sha256, d.size_bytes, d.mtime_ns, stat_marks(d.stamp), found))
            for row, d, found in hashed
        ]
        try:
            outcomes, claimed = finish_batch(
                self.db,
                self.owner,
                items,
                policy=self.policy,
                tag_cache=self._tag_cache,
                claim_next=claim,
                held=self._connection,
            )
        except (ValidationError, ValueError, RecursionError) as exc:
            # A row's data the catalog cannot take (a ValidationError, or an encoding
            # error the driver raises as it is, e.g. a lone surrogate): fail that row.
            if len(hashed) > 1:  # find the row that cannot be stored: one at a time
                for one in hashed:
                    self._hashed = [one]
                    self.settle()
                return None
            self._give_up(hashed[0][0], f"cannot be catalogued: {exc}")
            return None
        self._leases.hold(claimed)  # so a stop hands them back
        for row, digest, _ in hashed:
            self._report(row, digest, outcomes[row.id])
        return claimed

    def settle_quietly(self, worker_name: str) -> None:
        """On the way out: commit what was hashed, unless the catalog is what failed."""
        try:
            self.settle()
        except Exception as exc:  # still held: the lease keeper hands them back unsettled
            log.warning("worker %s could not commit its last files: %s", worker_name, exc)
            self._hashed, self._bytes = [], 0

    def _report(self, row: ClaimedRow, digest: FileDigest, settled: Settled | None) -> None:
        if settled is None:
            self._leases.let_go(row, "lease lost before the file could be catalogued")
            return
        self._leases.done(row)
        if settled.outcome is Outcome.CONFLICT:
            log.info("%s: conflict: %s", row.path, settled.reason)
        self._accounts.outcome(row, digest, settled)
