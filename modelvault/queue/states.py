"""The status machine of a staging row: which statuses wait, which are final, how a
row moves between them, and what putting it back in the queue writes.

```
            claim (lease, owner)
 pending ────────────────────────► claimed ──► (deleted: settled into models)
   ▲  ▲                              │
   │  └── lease lost / hand back / retry after a back-off
   │                                 ▼
   └── retried by a person ◄── missing | failed | duplicate | conflict
       or a scan that finds the file changed
```

Every writer of ``pending_import`` takes its status values and its "back to
pending" columns from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from modelvault.db.models import FINAL_STATUSES, PendingStatus
from modelvault.errors import ValidationError

__all__ = [
    "BACK_TO_PENDING",
    "CLAIMED",
    "CONFLICT",
    "DUPLICATE",
    "FAILED",
    "FINAL",
    "MISSING",
    "PENDING",
    "RETRIED_BY_PERSON",
    "TRANSITIONS",
    "WAITING",
    "after_failure",
    "checked_final",
]

PENDING = PendingStatus.PENDING.value
CLAIMED = PendingStatus.CLAIMED.value
MISSING = PendingStatus.MISSING.value
FAILED = PendingStatus.FAILED.value
DUPLICATE = PendingStatus.DUPLICATE.value
CONFLICT = PendingStatus.CONFLICT.value

# Rows that wait for a worker: queued, or held under a lease.
WAITING = frozenset({PENDING, CLAIMED})
# Rows kept, with their tags and notes, until a person or a scan puts them back.
FINAL = frozenset(status.value for status in FINAL_STATUSES)

# Where a row may go from each status (a settled row is deleted, not moved).
TRANSITIONS: Mapping[str, frozenset[str]] = {
    PENDING: frozenset({CLAIMED}),
    CLAIMED: frozenset({PENDING} | FINAL),
    **{status: frozenset({PENDING}) for status in FINAL},
}

# What a row put back in the queue gets: claimable at once, held by nobody.
BACK_TO_PENDING: Mapping[str, Any] = {
    "status": PENDING,
    "not_before": None,
    "claimed_by": None,
    "lease_expires_at": None,
}
# ... and, put back by a person (``retry``), its attempts start again.
RETRIED_BY_PERSON: Mapping[str, Any] = {**BACK_TO_PENDING, "attempts": 0, "last_error": None}


def after_failure(attempts: int, max_attempts: int, *, final: bool) -> str:
    """The status of a row whose attempt number ``attempts`` failed: ``pending`` again
    (after a back-off) or ``failed`` (for good, or ``final`` at once)."""
    return FAILED if final or attempts >= max_attempts else PENDING


def checked_final(statuses: Iterable[str]) -> list[str]:
    """``statuses`` as a list, each one a final status (``ValidationError`` if not)."""
    wanted = [str(status) for status in statuses]
    for status in wanted:
        if status not in FINAL:
            raise ValidationError(
                f"{status!r} cannot be retried: use one of {', '.join(sorted(FINAL))}."
            )
    return wanted
