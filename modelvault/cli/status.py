"""``status``, ``pending`` and ``retry``: the catalog's counts and its queue."""

from __future__ import annotations

import argparse

from modelvault.cli.common import (
    EXIT_OK,
    describe_catalog,
    open_catalog,
    ui,
)
from modelvault.cli.output import plural


def cmd_status(args: argparse.Namespace) -> int:
    db = open_catalog(args, read_only=True)
    counts, lines = describe_catalog(db)
    ui(args).emit({"url": db.display_url, **counts}, lines)
    return EXIT_OK


def cmd_pending(args: argparse.Namespace) -> int:
    db = open_catalog(args, read_only=True)
    from modelvault.cli.curate import pending_table

    rows = db.get_pending_imports(args.status, limit=args.limit)
    lines = pending_table(rows)
    if not rows:
        lines = [
            "no queued rows" + (f" with status {', '.join(args.status)}" if args.status else "")
        ]
    ui(args).emit({"rows": [row.to_dict() for row in rows]}, lines)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    from modelvault.migration.worker import retry_pending

    db = open_catalog(args, must_exist=True)
    statuses = tuple(args.status or ("failed", "missing"))
    count = retry_pending(db, statuses=statuses)
    ui(args).emit(
        {"requeued": count, "statuses": list(statuses)},
        [f"{plural(count, 'row')} put back in the queue; run 'modelvault worker' to hash them"],
    )
    return EXIT_OK
