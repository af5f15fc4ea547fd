"""The rows a worker holds: their leases renewed while it works, and handed back
(or, if the catalog fails, left to be taken over) when it stops."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from modelvault.database import DatabaseManager
from modelvault.migration.worker_events import Accounts
from modelvault.queue import leases
from modelvault.queue.connection import HeldConnection
from modelvault.queue.rows import ClaimedRow

__all__ = ["RELEASE_PATIENCE_SECONDS", "LeaseKeeper"]

log = logging.getLogger("modelvault.migration.worker")

# How long a stopping worker keeps trying to hand its rows back to a failing catalog.
RELEASE_PATIENCE_SECONDS = 5.0
FIRST_RETRY_SECONDS = 0.02  # then doubled, up to a second


class LeaseKeeper:
    """The rows a worker claimed and has not finished, and their leases."""

    def __init__(
        self,
        db: DatabaseManager,
        owner: str,
        lease_seconds: float,
        renew_every: float,
        connection: HeldConnection,
        accounts: Accounts,
    ) -> None:
        self.db = db
        self.owner = owner
        self.rows: dict[int, ClaimedRow] = {}
        self._lease_seconds = lease_seconds
        self._renew_every = renew_every
        self._next_renew = 0.0
        self._connection = connection
        self._accounts = accounts

    def hold(self, rows: Iterable[ClaimedRow], *, renew_from_now: bool = False) -> None:
        """Hold ``rows`` (so a stop hands them back); ``renew_from_now``: a batch begins."""
        self.rows.update((row.id, row) for row in rows)
        if renew_from_now:
            self._next_renew = time.monotonic() + self._renew_every

    def holds(self, row: ClaimedRow) -> bool:
        return row.id in self.rows

    def done(self, row: ClaimedRow) -> None:
        """The row reached its place (or was lost and told so): no lease to keep."""
        self.rows.pop(row.id, None)

    def let_go(self, row: ClaimedRow, why: str) -> None:
        """The row went back to the queue, or to another worker: counted as released."""
        self.rows.pop(row.id, None)
        self._accounts.released(row, why)

    def renew_due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._next_renew

    def maybe_renew(self, now: float | None = None) -> None:
        if self.rows and self.renew_due(now):
            self.renew()

    def renew(self) -> None:
        """Extend every lease held; the rows whose lease was lost are let go (the one being
        hashed is only dropped: its hash tells)."""
        self._next_renew = time.monotonic() + self._renew_every
        kept = leases.renew(
            self.db, self.owner, self.rows.keys(), self._lease_seconds, held=self._connection
        )
        for row_id in [i for i in self.rows if i not in kept]:
            row = self.rows[row_id]
            if row is not self._accounts.current:
                self.let_go(row, "lease lost: another worker took the file over")
            else:
                self.rows.pop(row_id)

    def release_all(self, why: str) -> None:
        """Hand back every row still held; each is counted once, as what became of it."""
        if not self.rows:
            return
        rows = list(self.rows.values())
        released = self._hand_back([row.id for row in rows])
        for row in rows:
            if released is None:
                self.rows.pop(row.id, None)
                self._accounts.abandoned(row)
            elif row.id in released:
                self.let_go(row, why)
            else:
                self.let_go(row, "lease lost: another worker took the file over")

    def _hand_back(self, ids: list[int]) -> set[int] | None:
        """``leases.release``, tried again for a while (the catalog may be back in a
        moment: a lock released, a connection restored); None if it never worked."""
        deadline = time.monotonic() + RELEASE_PATIENCE_SECONDS
        pause = FIRST_RETRY_SECONDS
        while True:
            try:
                return leases.release(self.db, self.owner, ids)
            except Exception as exc:  # the last chance to hand them back: any failure may pass
                if time.monotonic() + pause > deadline:
                    log.warning(
                        "worker %s could not hand its %d rows back: %s; the next run on this "
                        "host takes them over, elsewhere they wait for their leases to run out",
                        self._accounts.name,
                        len(ids),
                        exc,
                    )
                    return None
                log.info(
                    "worker %s: handing rows back failed, trying again: %s",
                    self._accounts.name,
                    exc,
                )
            time.sleep(pause)  # not the stop event: it is set when we get here
            pause = min(pause * 2, 1.0)
