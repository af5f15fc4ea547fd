"""The workers run from the command line: hashing with progress, stopped cleanly
by Ctrl-C, and what they did, said."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any

from modelvault.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_UNFINISHED,
    describe_catalog,
    exit_code_for,
    progress_view,
    ui,
)
from modelvault.cli.interrupt import HAND_BACK_SECONDS, Unfinished
from modelvault.cli.output import Line, human_bytes, plural
from modelvault.database import DatabaseManager
from modelvault.errors import ModelVaultError


def run_workers(args: argparse.Namespace, db: DatabaseManager) -> tuple[Any, int | None]:
    """Stage 2 under a MigrationManager with progress; Ctrl-C (or a signal that
    stops as it does) stops cleanly.

    Returns the final ``MigrationStatus`` and, if the run was interrupted, the
    exit code that says so (None if it was not).
    """
    from modelvault.cli.signals import exit_code
    from modelvault.migration.manager import MigrationManager, MigrationState

    manager = MigrationManager.for_database(db)
    view = progress_view(args)
    unsubscribe = manager.subscribe(view.hashing)
    interrupted: int | None = None
    try:
        manager.start_processing(workers=args.workers, policy=args.conflict)
        try:
            while not manager.wait(0.25):
                pass
        except KeyboardInterrupt as interrupt:
            interrupted = exit_code(interrupt)
            manager.stop()  # first: after SIGHUP, writing to the terminal may fail
            with contextlib.suppress(OSError):
                view.close(erase=True)
                ui(args).err.print(
                    "modelvault: interrupted: finishing the current step and releasing files..."
                )
            if not manager.wait(HAND_BACK_SECONDS):  # the catalog does not answer, or is locked
                raise Unfinished(
                    f"the catalog at {db.display_url} did not take the files being hashed back "
                    f"within {HAND_BACK_SECONDS:g} s: any left claimed are taken over by the next "
                    "run on this host at once, by other hosts when their lease runs out; run the "
                    "same command again to continue"
                ) from None
    finally:
        unsubscribe()
    manager.flush(5.0)  # the last statuses reach the view before its final frame
    status = manager.status(refresh=False)
    if status.state is MigrationState.FAILED:  # no counts to read from a failing catalog
        view.close()
        raise ModelVaultError(status.error or "the workers failed")
    status = manager.status()
    if interrupted is None:
        view.hashing(status, final=True)  # progress events are throttled: show the end
    view.close()
    if interrupted is None and status.state is MigrationState.STOPPED:
        interrupted = EXIT_INTERRUPTED
    return status, interrupted


def describe_workers(status: Any, *, interrupted: bool = False, waiting: int = 0) -> list[Line]:
    """What the workers did; after Ctrl-C also what was read, what went back to the
    queue to be read again, and how many files still wait."""
    report = status.worker_report
    if not report:
        return []
    kinds = (
        "imported",
        "merged",
        "moved",
        "replaced",
        "duplicate",
        "conflict",
        "missing",
        "failed",
    )
    outcomes = ", ".join(f"{report[k]} {k}" for k in kinds if report.get(k))
    if report.get("retried"):
        outcomes += f"{', ' if outcomes else ''}{report['retried']} to retry"
    if report.get("abandoned"):  # the catalog failed before they could be handed back
        outcomes += f"{', ' if outcomes else ''}{report['abandoned']} left claimed"
    seconds = f"{report.get('seconds', 0):.1f} s"
    if interrupted:
        lines: list[Line] = [
            f"hashing: interrupted after {seconds} and {human_bytes(report['bytes_hashed'])} "
            f"read: {plural(status.files_done, 'file')} done ({outcomes or 'none'})"
        ]
        if report.get("released"):
            lines.append(
                f"  {plural(report['released'], 'file')} being hashed went back to the queue "
                "(read again from the start next time)"
            )
        lines.append(f"  {plural(waiting, 'file')} still to hash")
        return lines
    # The same counts as the progress line's, so the two always agree.
    return [
        f"hashing: {plural(status.files_done, 'file')}, {human_bytes(status.bytes_done)} "
        f"in {seconds}: {outcomes or 'nothing to do'}"
    ]


Describe = Callable[[bool], tuple[dict[str, Any], list[Line]]]


def finish_processing(args: argparse.Namespace, db: DatabaseManager, describe: Describe) -> int:
    """Run the workers, then print ``describe(interrupted)`` (the data and lines of
    what ran before them), what they did and the catalog's counts."""
    status, interrupted = run_workers(args, db)
    data, lines = describe(interrupted is not None)
    counts, catalog_lines = describe_catalog(db)
    code = interrupted if interrupted is not None else exit_code_for(counts["staging"])
    waiting = counts["staging"]["pending"] + counts["staging"]["claimed"]
    lines = lines + describe_workers(status, interrupted=interrupted is not None, waiting=waiting)
    lines += catalog_lines
    if interrupted is not None:
        lines.append("interrupted: run the same command again to continue where it stopped")
    elif code == EXIT_UNFINISHED:
        lines.append("some rows need attention: see 'modelvault pending --status failed conflict'")
    data = {**data, "worker": status.worker_report, **counts, "exit_code": code}
    ui(args).emit(data, lines)
    return code
