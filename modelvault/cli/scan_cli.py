"""``scan``: model folders compared with the catalog, what changed staged (and
with ``--hash``, hashed), and the summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelvault.cli.common import (
    EXIT_OK,
    backup_first,
    open_catalog,
    progress_view,
    settings_for,
    ui,
)
from modelvault.cli.escaping import printable
from modelvault.cli.output import Line, plural
from modelvault.cli.workers import finish_processing
from modelvault.database import DatabaseManager
from modelvault.db.engine import sqlite_file
from modelvault.db.types import utcnow
from modelvault.errors import ModelVaultError


def cmd_scan(args: argparse.Namespace) -> int:
    """Stage new and changed model files (none is read); with --hash, hash them too."""
    from modelvault.scan import resolve_roots, scan_roots, settle_after_hashing

    if args.dry_run and args.hash:
        raise ModelVaultError("--dry-run writes nothing, so it cannot --hash: give one of the two.")
    settings = settings_for(args)
    roots = resolve_roots(
        args.roots,
        comfyui=args.comfyui,
        extra_configs=[path for group in args.extra_model_paths_config or () for path in group],
        settings=settings,
        model_type=args.type,
    )
    db = open_dry_run_catalog(args) if args.dry_run else open_catalog(args)
    backup_first(args, db, "scan")
    out = ui(args)
    out.say(f"scan: looking through {plural(len(roots), 'folder')}")
    changes = (lambda change: out.err.print(change.describe())) if args.verbose else None
    view = progress_view(args)
    started = utcnow()
    try:
        found = scan_roots(
            db,
            roots,
            progress=view.scanning,
            on_change=changes,
            dry_run=args.dry_run,
            policy=settings.conflict_policy,
        )
    finally:
        view.close()
    if args.hash:
        from modelvault.cli.identify_cli import wrong_folder_lines

        def describe(interrupted: bool) -> tuple[dict[str, Any], list[Line]]:
            if not interrupted:
                settle_after_hashing(db, found, changes)
            if args.verbose:  # what hashing found out: files of another kind than their folder
                for line in wrong_folder_lines(db, started):
                    out.err.print(line)
            report = found.to_dict()
            return {"scan": report}, describe_scan(report)

        return finish_processing(args, db, describe)
    report = found.to_dict()
    lines = describe_scan(report)
    if report["staged"] and not args.dry_run:
        lines.append("run 'modelvault worker' (or scan with --hash) to hash the staged files")
    out.emit({"scan": report, "exit_code": EXIT_OK}, lines)
    return EXIT_OK


def open_dry_run_catalog(args: argparse.Namespace) -> DatabaseManager:
    """The catalog, opened so that nothing can be written; where a SQLite catalog
    does not exist yet, an empty one in memory (every file is new to it)."""
    db = DatabaseManager(args.db or None, settings=settings_for(args), read_only=True)
    database = sqlite_file(db.url)
    if database and not Path(database).exists():
        ui(args).say(f"scan: there is no catalog at {database} yet: every file is new to it")
        db = DatabaseManager("sqlite://", settings=settings_for(args))
    db.init_db()
    return db


def describe_scan(report: dict[str, Any]) -> list[Line]:
    """The scan's summary; every path in it is escaped (``printable``)."""
    lines: list[Line] = [
        f"scan: {plural(report['files_seen'], 'model file')} in "
        f"{plural(len(report['roots']), 'folder')}: {report['unchanged']} unchanged, "
        f"{report['staged']} staged ({report['staged_new']} new, "
        f"{report['staged_changed']} changed, {report['requeued']} again)",
        f"  {report['already_staged']} waiting already, {report['moved']} moved, "
        f"{report['missing']} missing (kept in the catalog: 'modelvault models --missing')",
    ]
    if report["maybe_moved"]:
        lines.append(
            f"  {plural(report['maybe_moved'], 'file')} gone, of the size of a file waiting "
            "to be hashed: hashing will tell whether it moved there"
        )
    lines += [f"  moved: {text}" for text in report["moved_paths"][:10]]
    lines += [f"  missing: {printable(path)}" for path in report["missing_paths"][:10]]
    if report["files_skipped"]:
        lines.append(f"  {plural(report['files_skipped'], 'model file')} skipped:")
        lines += [f"    {text}" for text in report["skipped_files"]]
    lines += [f"  symlink loop: {text}" for text in report["loops"]]
    lines += [f"  not scanned: {text}" for text in report["skipped"]]
    lines += [f"  unreadable: {text}" for text in report["unreadable"]]
    if report["dry_run"]:
        lines.append("dry run: nothing was written; run the scan without --dry-run to do it")
    return lines
