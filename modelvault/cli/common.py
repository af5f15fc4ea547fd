"""What every ``modelvault`` command uses: its output (``args.ui`` says where it
goes), the catalog opened, the counts it ends with, and the exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from modelvault.cli.output import Line, Ui, plural
from modelvault.cli.progress import ProgressView
from modelvault.config import Settings
from modelvault.database import DatabaseManager
from modelvault.db.engine import sqlite_file
from modelvault.errors import ModelVaultError
from modelvault.queue.states import CLAIMED, CONFLICT, FAILED, PENDING

EXIT_OK, EXIT_UNFINISHED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Rows that need a person (failed, conflict) or are still waiting: after a run
# meant to finish everything, either means "not done".
NEEDS_ATTENTION = (FAILED, CONFLICT)
UNFINISHED_STATUSES = (*NEEDS_ATTENTION, PENDING, CLAIMED)  # the final ones, then WAITING


def ui(args: argparse.Namespace) -> Ui:
    result: Ui = args.ui
    return result


def settings_for(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        workers=getattr(args, "workers", None), conflict_policy=getattr(args, "conflict", None)
    )


def open_catalog(
    args: argparse.Namespace,
    *,
    read_only: bool = False,
    must_exist: bool = False,
    adopt_empty: bool = False,
    check: Callable[[DatabaseManager], None] | None = None,
) -> DatabaseManager:
    """The catalog named by --db or the settings, migrated to the newest schema.

    ``read_only`` is for commands that only look: nothing can be written and
    the catalog must exist already. ``must_exist`` refuses a SQLite file that
    does not exist, so a mistyped --db says so instead of creating a catalog.
    ``adopt_empty`` (``init`` only) makes an empty file a catalog. ``check``
    refuses bad input before anything is created or written.
    """
    db = DatabaseManager(args.db or None, settings=settings_for(args), read_only=read_only)
    exists = db.check(adopt_empty=adopt_empty)
    if must_exist and not exists:
        raise ModelVaultError(
            f"there is no catalog at {sqlite_file(db.url)}: check --db, or create one with "
            "'modelvault init' or 'modelvault migrate LEGACY'."
        )
    if check is not None:
        check(db)
    db.init_db(adopt_empty=adopt_empty)
    # From here on, an error in a command that writes is not bad input: the run failed.
    args.work_started = not read_only
    if not read_only and db.network_filesystem:
        ui(args).say(
            f"modelvault: the catalog is on {db.network_filesystem}, so it is kept in "
            "SQLite's rollback-journal mode (its write-ahead log is unsafe there): for "
            "workers on several computers, use a PostgreSQL catalog (see the README)."
        )
    return db


def describe_catalog(db: DatabaseManager) -> tuple[dict[str, Any], list[Line]]:
    catalog = db.catalog_counts()
    staging = db.staging_counts()
    waiting = ", ".join(f"{n} {status}" for status, n in staging.items() if n) or "empty"
    lines: list[Line] = [
        f"catalog {db.display_url}: {plural(catalog['models'], 'model')}, "
        f"{plural(catalog['tags'], 'tag')}",
        f"queue: {waiting}",
    ]
    return {"catalog": catalog, "staging": staging}, lines


def exit_code_for(staging: dict[str, int], statuses: Sequence[str] = UNFINISHED_STATUSES) -> int:
    return EXIT_UNFINISHED if any(staging.get(s) for s in statuses) else EXIT_OK


def progress_view(args: argparse.Namespace) -> ProgressView:
    return ProgressView(ui(args).err, quiet=ui(args).quiet or ui(args).json)


def backup_first(args: argparse.Namespace, db: DatabaseManager, command: str) -> None:
    from modelvault.cli.keep import backup_first as back_up

    back_up(args, db, command)
