"""The commands that keep the catalog safe: verify, export, import-catalog, backup;
and the backup that migrate, import, scan and import-catalog make before they write."""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelvault.backup import (
    BackupReport,
    backup_before_writing,
    backup_catalog,
    claim_folder,
    default_folder,
)
from modelvault.cli.common import (
    EXIT_OK,
    EXIT_UNFINISHED,
    open_catalog,
    progress_view,
    settings_for,
    ui,
)
from modelvault.cli.escaping import printable
from modelvault.cli.options import add_conflict, add_model, add_no_backup
from modelvault.cli.output import Line, human_bytes, plural
from modelvault.cli.progress import ProgressView
from modelvault.cli.usage import UsageError
from modelvault.database import DatabaseManager
from modelvault.exchange import export_catalog, layout_for, refuse_unless_ours
from modelvault.exchange_import import import_catalog
from modelvault.hashing import HashControl
from modelvault.verify import Verdict, VerifyProgress, VerifyReport, verify_models

DRAW_EVERY = 0.1  # seconds between two progress frames of verify


# -- backups ---------------------------------------------------------------------


def backup_first(args: argparse.Namespace, db: DatabaseManager, command: str) -> None:
    """Before ``command`` first writes: back up a catalog that holds models, and say
    where (unless ``--no-backup``)."""
    if getattr(args, "no_backup", False) or getattr(args, "dry_run", False):
        return
    report = backup_before_writing(db, command)
    if report is not None:
        ui(args).say(f"backup: {describe_backup(report)} (skip it with --no-backup)")


def describe_backup(report: BackupReport) -> str:
    what = "catalog copied" if report.kind == "sqlite" else "catalog exported"
    text = f"{what} to {report.file} ({human_bytes(report.bytes)})"
    if report.images_list:
        text += f", the list of its {plural(report.images, 'stored image')} beside it"
    return text


def cmd_backup(args: argparse.Namespace) -> int:
    db = open_catalog(args, read_only=True, must_exist=True)
    claim_folder(Path(args.dest).expanduser().absolute() if args.dest else default_folder(db))
    args.work_started = True  # from here, a failure is the run's (a full disk), not the input's
    report = backup_catalog(db, args.dest)
    lines: list[Line] = [f"backup: {describe_backup(report)}"]
    if report.kind == "export":
        lines.append(f"  restore it with: modelvault import-catalog {report.file}")
    ui(args).emit({"backup": report.to_dict()}, lines)
    return EXIT_OK


# -- export and import -------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    db = open_catalog(args, read_only=True, must_exist=True)
    layout_for(args.file, args.layout)
    refuse_unless_ours(Path(args.file).expanduser().absolute())
    args.work_started = True  # from here, a failure is the run's (a full disk), not the input's
    report = export_catalog(db, args.file, layout=args.layout, with_images=args.with_images)
    layout = "JSON Lines" if report.layout == "lines" else "one JSON document"
    lines: list[Line] = [
        f"exported to {report.path} ({layout}, {human_bytes(report.bytes_written)}):",
        f"  {plural(report.models, 'model')}, {plural(report.tags, 'tag')}, "
        f"{plural(report.queued, 'queued row')}, {plural(report.deleted, 'deleted record')}, "
        f"{plural(report.images, 'stored image')} listed",
    ]
    if report.images_folder:
        lines.append(
            f"  {plural(report.images_copied, 'image')} copied into {report.images_folder}"
        )
    ui(args).emit({"export": report.to_dict()}, lines)
    return EXIT_OK


def cmd_import_catalog(args: argparse.Namespace) -> int:
    from modelvault.exchange_import import ExportFile

    ExportFile(args.file).check()  # a bad file is refused before a catalog is made
    db = open_catalog(args)
    backup_first(args, db, "import-catalog")
    report = import_catalog(
        db, args.file, policy=args.conflict or settings_for(args).conflict_policy
    )
    lines: list[Line] = [
        f"imported {report.path} ({report.policy}):",
        f"  {report.models_added} models added, {report.merged} merged, {report.moved} moved, "
        f"{plural(report.duplicates, 'duplicate')}, {plural(report.conflicts, 'conflict')} "
        "(queued: see 'modelvault pending')",
        f"  {report.tags_added} tags added, {report.tags_recoloured} recoloured; "
        f"{report.queued_added} queued rows added ({report.queued_present} queued already); "
        f"{report.deleted_added} deleted records added",
    ]
    if report.images_listed:
        lines.append(
            f"  preview images: {report.images_listed} listed, {report.images_copied} copied "
            f"into the store, {report.images_not_found} found nowhere"
        )
    code = EXIT_UNFINISHED if report.conflicts else EXIT_OK
    ui(args).emit({"import": report.to_dict(), "exit_code": code}, lines)
    return code


# -- verify ----------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    value: str


RUNNING = _State("running")


@dataclass
class _Status:
    """What the progress view draws, in the form of a ``MigrationStatus``."""

    files_total: int
    files_done: int
    bytes_total: int
    bytes_done: int
    rate_bytes_per_second: float
    eta_seconds: float | None
    current_file: str | None
    state: _State = RUNNING
    waiting: str | None = None
    files_unsized: int = 0

    @property
    def fraction(self) -> float | None:
        if not self.bytes_total:
            return self.files_done / self.files_total if self.files_total else None
        # Below 1 while a file is left, as the workers' line.
        whole = min(self.bytes_done / self.bytes_total, 1.0)
        return whole if self.files_done >= self.files_total else min(whole, 0.999)


class _Drawing:
    """Verify's progress, drawn at most every ``DRAW_EVERY`` seconds."""

    def __init__(self, view: ProgressView) -> None:
        self.view = view
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, state: VerifyProgress, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < DRAW_EVERY:
            return
        self.last = now
        rate = state.bytes_done / max(now - self.started, 1e-6)
        left = max(state.bytes_total - state.bytes_done, 0)
        self.view.hashing(
            _Status(
                state.files_total,
                state.files_done,
                state.bytes_total,
                state.bytes_done,
                rate,
                left / rate if rate > 0 else None,
                state.current,
            ),
            final=final,
        )


def cmd_verify(args: argparse.Namespace) -> int:
    from modelvault.cli.signals import exit_code

    if args.all and (args.models or args.under):
        raise UsageError("--all verifies every model: give it alone, or MODEL or --under")
    if not (args.all or args.models or args.under):
        raise UsageError("say what to verify: MODEL..., --under DIR or --all")
    db = open_catalog(args, read_only=not args.update, must_exist=True)
    for key in args.models:  # a model that is not there is refused before any read
        db.find_model(key)
    control, view = HashControl(), progress_view(args)
    drawing = _Drawing(view)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = verify_models(
                db,
                keys=args.models,
                under=args.under or (),
                update=args.update,
                control=control,
                progress=drawing,
            )
        except BaseException as exc:  # handed to the main thread, which raises it
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="modelvault-verify", daemon=True)
    interrupted: int | None = None
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.25)
    except KeyboardInterrupt as interrupt:
        interrupted = exit_code(interrupt)
        control.stop()
        view.close(erase=True)
        worker.join()
    view.close()
    if "error" in outcome:
        raise outcome["error"]
    report: VerifyReport = outcome["report"]
    code = (
        interrupted if interrupted is not None else (EXIT_OK if report.clean else EXIT_UNFINISHED)
    )
    ui(args).emit({"verify": report.to_dict(), "exit_code": code}, describe_verify(report))
    return code


def describe_verify(report: VerifyReport) -> list[Line]:
    counts = report.counts
    head = "verify: interrupted after" if report.stopped else "verify:"
    lines: list[Line] = [
        f"{head} {report.checked} of {plural(report.models, 'model')} read again "
        f"({human_bytes(report.bytes_read)}): {counts['ok']} as catalogued, "
        f"{counts['changed']} changed, {counts['gone']} gone, "
        f"{counts['unreachable']} unreachable, {counts['failed']} unreadable",
    ]
    for problem in report.problems[:50]:
        why = (
            f" ({problem.reason})" if problem.reason and problem.verdict is not Verdict.GONE else ""
        )
        now = f" now {problem.found_sha256[:12]}" if problem.found_sha256 else ""
        lines.append(f"  {problem.verdict}: {printable(problem.path)}{now}{why}")
    if len(report.problems) > 50:
        lines.append(f"  ... and {report.checked - counts['ok'] - 50} more (all of them: --json)")
    if report.update and report.staged:
        lines.append(
            f"  {plural(report.staged, 'changed file')} staged: run 'modelvault worker' to "
            "catalogue the new content (tags and notes stay with the file)"
        )
    elif counts["changed"] and not report.update:
        lines.append("  nothing was changed: --update stages changed files as a scan does")
    if report.stopped:
        lines.append("interrupted: run the same command again to verify the rest")
    return lines


# -- the grammar ------------------------------------------------------------------


def add_keeping_commands(command: Any) -> None:
    """verify, export, import-catalog, backup."""
    _add_verify(command)
    _add_export(command)
    imported = command(
        "import-catalog",
        cmd_import_catalog,
        "merge an export into the catalog by SHA-256, under the conflict policy",
    )
    add_conflict(imported, what="model")
    imported.add_argument("file", metavar="FILE", help="a file written by 'modelvault export'")
    add_no_backup(imported)
    backup = command(
        "backup",
        cmd_backup,
        "a consistent copy of the catalog (SQLite) or its export (PostgreSQL), while "
        "workers may run",
    )
    backup.add_argument(
        "dest",
        metavar="DEST",
        nargs="?",
        help="a folder for backups: new, empty, or one of earlier backups (default: "
        "backups/ beside a SQLite catalog, else in the data folder)",
    )


def _add_verify(command: Any) -> None:
    verify = command(
        "verify",
        cmd_verify,
        "read model files again and report each that changed (bit rot, replaced in place), "
        "is gone or cannot be reached; read-only unless --update",
    )
    add_model(verify, nargs="*")
    verify.add_argument("--all", action="store_true", help="every model")
    verify.add_argument(
        "--under", action="append", metavar="DIR", help="the models in this folder or below it"
    )
    verify.add_argument(
        "--update",
        action="store_true",
        help="stage changed files for hashing as a scan does (run 'modelvault worker' next)",
    )


def _add_export(command: Any) -> None:
    export = command(
        "export",
        cmd_export,
        "write the whole catalog (models, tags, queue, deleted log, the image list) to FILE",
    )
    export.add_argument("file", metavar="FILE", help="a new file, or an earlier export")
    export.add_argument(
        "--layout",
        choices=("json", "lines"),
        help="one JSON document, or JSON Lines for big catalogs (default: lines for "
        ".jsonl or .ndjson, else json)",
    )
    export.add_argument(
        "--with-images",
        action="store_true",
        help="also copy the stored preview images into the folder FILE.images beside it",
    )
