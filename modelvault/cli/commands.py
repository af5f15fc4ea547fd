"""What each ``modelvault`` command does; ``args.ui`` says where its output goes."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text

from modelvault import __version__
from modelvault.cli.escaping import printable
from modelvault.cli.interrupt import HAND_BACK_SECONDS, Unfinished
from modelvault.cli.output import Line, Ui, human_bytes, plural, shell_command, table
from modelvault.cli.progress import ProgressView
from modelvault.config import ENV_PREFIX, Settings, default_data_dir, mask_password, shown_url
from modelvault.database import DatabaseManager
from modelvault.db.engine import sqlite_file
from modelvault.db.models import PendingStatus
from modelvault.db.sqlite_files import path_problem
from modelvault.db.types import utcnow
from modelvault.errors import ModelVaultError, NotFoundError
from modelvault.file_stamp import FILE_STAT
from modelvault.images import default_store
from modelvault.presence import PRESENT, FileCheck, FileState, check_file
from modelvault.records import ModelRecord

if TYPE_CHECKING:
    from modelvault.legacy.reader import LegacyCatalog

EXIT_OK, EXIT_UNFINISHED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Rows that need a person (failed, conflict) or are still waiting: after a run
# meant to finish everything, either means "not done".
NEEDS_ATTENTION = (PendingStatus.FAILED.value, PendingStatus.CONFLICT.value)
UNFINISHED_STATUSES = (*NEEDS_ATTENTION, PendingStatus.PENDING.value, PendingStatus.CLAIMED.value)
WARNINGS_SHOWN = 5  # of an import's warnings, without -v


def ui(args: argparse.Namespace) -> Ui:
    result: Ui = args.ui
    return result


# -- the catalog --------------------------------------------------------------


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


def open_legacy_file(path: str) -> LegacyCatalog:
    """The legacy file, checked (a bad one is refused before anything is created or
    written) and open for the import, which reads it without checking it again."""
    from modelvault.legacy.reader import open_legacy

    return open_legacy(path)


def check_images(args: argparse.Namespace) -> Callable[[DatabaseManager], None]:
    """Refuse a bad --images folder, or preview images with no store to copy them to."""
    from modelvault.legacy.images import check_image_folders

    def check(db: DatabaseManager) -> None:
        check_image_folders(args.legacy, args.images, db.images_dir, db.display_url)

    return check


# -- reports --------------------------------------------------------------------


def describe_import(report: dict[str, Any], *, all_warnings: bool = False) -> list[Line]:
    counts = [
        plural(report["imported"], "model") + " catalogued",
        f"{report['merged']} merged",
        f"{report['moved']} moved",
        f"{report['staged']} staged for hashing",
        plural(report["duplicates"], "duplicate"),
        plural(report["conflicts"], "conflict"),
        f"{report['already_present']} already present",
        plural(report["tags_created"], "tag") + " created",
    ]
    lines: list[Line] = [
        f"legacy import: {plural(report['rows_read'], 'row')} read:",
        "  " + ", ".join(counts[:4]),
        "  " + ", ".join(counts[4:]),
    ]
    if report.get("failed"):
        lines.append(f"  {report['failed']} staged as failed: their paths cannot be used")
    clashes = report.get("color_clashes") or []
    if clashes:
        lines.append(
            f"  {plural(len(clashes), 'tag colour')} differ from the catalog's (kept in meta)"
        )
    if report.get("images"):
        lines += describe_images(report["images"])
    warnings = report.get("warnings") or []
    total = len(warnings) + report.get("warnings_omitted", 0)
    if warnings:
        shown = warnings if all_warnings else warnings[:WARNINGS_SHOWN]
        lines.append(f"  {plural(total, 'warning')}:")
        lines += [f"    legacy {w['table']} {w['legacy_id']}: {w['reason']}" for w in shown]
        if total > len(shown):
            more = "-v" if len(shown) < len(warnings) else "--json"
            lines.append(f"    ... and {total - len(shown)} more (all of them: {more})")
    return lines


def describe_images(images: dict[str, Any]) -> list[Line]:
    lines: list[Line] = [
        f"  preview images: {images['copied']} copied, {images['present']} already stored, "
        f"{images['missing']} missing, {images['failed']} not copied",
    ]
    if images["earlier"]:
        lines.append(f"    {plural(images['earlier'], 'earlier preview')} kept with their models")
    if images["unreferenced"]:
        lines.append(
            f"    {plural(images['unreferenced'], 'file')} no row names left in {images['folder']}"
        )
    return lines


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


# -- commands -----------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    # An empty file becomes a catalog only when named here: never one a
    # setting points to without the user saying so on this command line.
    db = open_catalog(args, adopt_empty=bool(args.db))
    revision = db.current_revision()
    ui(args).emit(
        {"catalog": db.display_url, "revision": revision},
        [f"catalog ready at {db.display_url} (schema {revision})"],
    )
    return EXIT_OK


def run_import(
    args: argparse.Namespace, db: DatabaseManager, legacy: LegacyCatalog
) -> dict[str, Any]:
    from modelvault.migration.importer import import_legacy_data

    view = progress_view(args)
    try:
        report = import_legacy_data(
            legacy,
            db,
            progress=view.importing,
            policy=getattr(args, "conflict", None),
            images_dir=args.images,
        )
    finally:
        view.close()
    return report.to_dict()


def backup_first(args: argparse.Namespace, db: DatabaseManager, command: str) -> None:
    from modelvault.cli.keep import backup_first as back_up

    back_up(args, db, command)


def cmd_import(args: argparse.Namespace) -> int:
    with open_legacy_file(args.legacy) as legacy:
        db = open_catalog(args, check=check_images(args))
        backup_first(args, db, "import")
        report = run_import(args, db, legacy)
    counts, lines = describe_catalog(db)
    # Staged rows are the point of stage 1; only rows that need a person count.
    code = exit_code_for(counts["staging"], NEEDS_ATTENTION)
    ui(args).emit(
        {"import": report, **counts, "exit_code": code},
        describe_import(report, all_warnings=bool(args.verbose)) + lines,
    )
    return code


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


def cmd_migrate(args: argparse.Namespace) -> int:
    with open_legacy_file(args.legacy) as legacy:
        db = open_catalog(args, check=check_images(args))
        backup_first(args, db, "migrate")
        report = run_import(args, db, legacy)
    lines = describe_import(report, all_warnings=bool(args.verbose))
    return finish_processing(args, db, lambda _: ({"import": report}, lines))


def cmd_worker(args: argparse.Namespace) -> int:
    db = open_catalog(args)
    return finish_processing(args, db, lambda _: ({}, []))


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


def cmd_tags(args: argparse.Namespace) -> int:
    db = open_catalog(args, read_only=True)
    tags = db.list_tags()
    out = ui(args)
    lines: list[Line] = table(
        ["COLOUR", "MODELS", "TAG"],
        [[out.swatch(tag.color or "-", tag.color), str(n), tag.name] for tag, n in tags],
        right={1},
    )
    out.emit(
        {"tags": [{"name": t.name, "color": t.color, "models": n} for t, n in tags]},
        lines if tags else ["no tags"],
    )
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from modelvault.cli.listing import list_models

    list_models(args, open_catalog(args, read_only=True), ui(args))
    return EXIT_OK


def _model_json(model: ModelRecord, file: FileCheck | None = None) -> dict[str, Any]:
    """The model as JSON, with what a look at its file found (``file``, if made already)."""
    file = file or check_file(model.path)
    data = model.to_dict()
    data["file_exists"] = file.exists  # null: it could not be looked at
    data["file_state"] = file.state.value
    return data


def cmd_show(args: argparse.Namespace) -> int:
    from modelvault.cli.curate import copy_lines, show_queued

    db = open_catalog(args, read_only=True)
    try:
        model = db.find_model(args.model)
    except NotFoundError as exc:  # perhaps a file that is queued, not catalogued
        return show_queued(args, db, exc)
    previews, file = _preview_files(db, model), check_file(model.path)
    copies = db.find_copies(model.sha256).queued
    data = {
        **_model_json(model, file),
        "preview_files": previews,
        "copies": [{"id": r.id, "path": r.path, "status": r.status} for r in copies],
    }
    lines = describe_model(ui(args), model, previews, file=file, more=copy_lines(copies))
    ui(args).emit({"model": data}, lines)
    return EXIT_OK


def _preview_files(db: DatabaseManager, model: ModelRecord) -> list[str]:
    """The absolute paths of the model's stored preview images."""
    entries = model.meta.get("previews")
    if not isinstance(entries, list):
        return []
    paths = []
    for entry in entries:
        try:
            paths.append(str(db.preview_path(entry)))
        except ModelVaultError:  # an entry an app wrote by hand, or no store: shown as JSON
            continue
    return paths


# The notes a user wrote, shown by name; every other key of meta follows as JSON.
NOTES = (
    ("description", "description"),
    ("prompts", "prompts"),
    ("community_links", "links"),
    ("images", "image URLs"),  # as the legacy app stored them
    ("previous_paths", "previous paths"),
)


def _file_note(file: FileCheck) -> str:
    if file.state is FileState.GONE:
        return "  (the file is gone)"
    if file.state is FileState.UNREACHABLE:
        return f"  (the file cannot be reached now: {file.reason}; it is not called gone)"
    return ""


def describe_model(
    out: Ui,
    model: ModelRecord,
    previews: Sequence[str] = (),
    *,
    file: FileCheck = PRESENT,
    more: Sequence[tuple[str, Line]] = (),
) -> list[Line]:
    """Every field of a model, one a line, labels aligned; ``more`` fields at the end."""
    fields_: list[tuple[str, Line]] = [
        ("name", model.name),
        ("sha256", model.sha256),
        ("type", model.type),
        ("base", model.base or "-"),
        ("size", _size(model.size_bytes)),
        ("path", model.path + _file_note(file)),
        ("modified", _when_ns(model.mtime_ns)),
        ("catalogued", _when(model.created_at)),
        ("updated", _when(model.updated_at)),
        ("tags", out.tag_list(model.tags, colour_as_text=True)),
    ]
    from modelvault.cli.identify_cli import identity_lines

    meta = dict(model.meta)
    meta.pop(FILE_STAT, None)  # bookkeeping (shown as "modified"), not a note
    fields_ += identity_lines(model, meta)
    if previews:
        meta.pop("previews", None)
        fields_ += note_lines("previews", list(previews))
    for key, label in NOTES:
        if key in meta:
            fields_ += note_lines(label, meta.pop(key))
    legacy = meta.pop("legacy", None)
    if isinstance(legacy, dict) and legacy.get("source"):
        fields_.append(("came from", f"legacy catalog {legacy['source']}, row {legacy.get('id')}"))
    for key, value in sorted(meta.items()):
        fields_ += note_lines(key, value)
    if isinstance(legacy, dict):
        rest = {k: v for k, v in legacy.items() if k not in ("source", "id")}
        if rest:
            fields_.append(("legacy fields", json.dumps(rest, default=str, sort_keys=True)))
    return aligned([*fields_, *more])


def aligned(fields_: Sequence[tuple[str, Line]]) -> list[Line]:
    """``label  value`` lines, the values in one column (text values escaped)."""
    width = max(len(label) for label, _ in fields_)
    return [
        Text.assemble(
            (label.ljust(width), "bold"),
            "  ",
            printable(value) if isinstance(value, str) else value,
        )
        for label, value in fields_
    ]


def note_lines(label: str, value: Any) -> list[tuple[str, Line]]:
    """A note as lines: a mapping one key a line, a list one item a line."""
    if isinstance(value, dict) and value:
        items = [f"{k}: {_text(v)}" for k, v in value.items()]
    elif isinstance(value, list) and value:
        items = [_text(v) for v in value]
    else:
        items = [_text(value)]
    return [(label if i == 0 else "", item) for i, item in enumerate(items)]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    return human_bytes(size) + ("" if size < 1024 else f" ({size:,} bytes)")


def _when(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _when_ns(mtime_ns: int | None) -> str:
    if mtime_ns is None:
        return "-"
    return _when(datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc))


def cmd_info(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    db_url = DatabaseManager.url_for(args.db or None, settings)
    file = sqlite_file(db_url)
    shown = {"db_url": shown_url(db_url)}  # --db wins
    values = [
        {
            "name": f.name,
            "value": shown.get(f.name) or setting_json(getattr(settings, f.name)),
            "source": _source(args, f.name),
        }
        for f in fields(Settings)
    ]
    data = {
        "version": __version__,
        "catalog": shown_url(db_url),
        "catalog_exists": Path(file).exists() if file else None,
        "data_dir": str(default_data_dir()),
        "images_dir": str(store) if (store := default_store(db_url, settings.images_dir)) else None,
        "settings": values,
    }
    lines: list[Line] = [
        f"modelvault {__version__}",
        f"catalog      {data['catalog']}"
        + ("" if data["catalog_exists"] in (True, None) else "  (not created yet)"),
        f"data folder  {data['data_dir']}",
        f"image folder {data['images_dir'] or '-'}",
        "",
        *table(
            ["SETTING", "VALUE", "FROM"],
            [[v["name"], setting_text(v["value"]), v["source"]] for v in values],
            right=set(),
        ),
    ]
    ui(args).emit(data, lines)
    return EXIT_OK


def setting_json(value: object) -> Any:
    """A setting's value as JSON has it: numbers as numbers, none as null, a list of
    folders as a list (a password in a text masked)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (tuple, list)):
        return [setting_json(item) for item in value]
    return mask_password(str(value))


def setting_text(value: object) -> str:
    """A setting's value for people: ``-`` for none, lists joined."""
    if value is None or value == []:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _source(args: argparse.Namespace, name: str) -> str:
    """Where a setting's value comes from: an argument, the environment, or the default."""
    given = {"db_url": "db", "workers": "workers", "conflict_policy": "conflict"}
    if name in given and getattr(args, given[name], None) is not None:
        return "argument"
    names = [ENV_PREFIX + name.upper()]
    if name == "db_url":
        names.append(ENV_PREFIX + "DB_PATH")
    set_in_env = [n for n in names if os.environ.get(n, "").strip()]
    return f"env {set_in_env[0]}" if set_in_env else "default"


def cmd_demo(args: argparse.Namespace) -> int:
    from modelvault.migration.demo import build_demo, check_demo_folder

    folder = _demo_folder(args.dir)
    # Every refusal before the first write: the folder must be the demo's, and
    # the catalog one that can be opened.
    check_demo_folder(folder)
    _check_demo_catalog(args, folder)
    out = ui(args)
    out.say(f"demo: writing a sample legacy catalog and model files in {folder}")
    try:
        legacy = build_demo(folder, file_mb=args.file_mb, progress=out.say)
    except OSError as exc:
        raise ModelVaultError(
            f"cannot build the demo in {folder}: {exc.strerror or exc}; choose another folder."
        ) from exc
    args.db = args.db or str(folder / DEMO_CATALOG)
    out.say("demo: migrating it into the catalog")
    args.legacy, args.images = str(legacy), None  # the demo's previews sit beside it
    code = cmd_migrate(args)
    out.say("demo: look at what it made with")
    for words in (
        ["models"],
        ["show", "dreamshaper_8.safetensors"],
        ["tags"],
        ["pending"],
    ):
        out.say("  " + shell_command(["modelvault", *words, "--db", args.db]))
    out.say(_removal(folder))
    return code


DEMO_CATALOG = "catalog.sqlite3"


def _demo_folder(text: str) -> Path:
    folder = Path(text).expanduser()
    try:
        return folder.resolve()
    except RuntimeError:  # Python before 3.13 on a symbolic link loop
        problem = "is a symbolic link loop (it leads back to itself)"
    except OSError as exc:
        problem = path_problem(exc)
    raise ModelVaultError(f"{folder} {problem}: give a new or empty folder for the demo.")


def _check_demo_catalog(args: argparse.Namespace, folder: Path) -> None:
    """Refuse the demo's catalog before anything is written, unless it will be
    made in a folder the demo makes (where nothing can be in the way)."""
    target = args.db or str(folder / DEMO_CATALOG)
    file = sqlite_file(DatabaseManager.url_for(target, settings_for(args)))
    made_with_the_folder = file is not None and (
        Path(file).parent == folder or folder in Path(file).parents
    )
    if made_with_the_folder and not os.path.lexists(Path(file or "").parent):
        return
    DatabaseManager(target, settings=settings_for(args)).check()


def _removal(folder: Path, platform: str = sys.platform) -> str:
    """How to remove the demo, in the words of the user's shell."""
    if platform != "win32":
        return "remove it all with: " + shell_command(["rm", "-r", str(folder)], platform=platform)
    return (
        "remove it all with: "
        + shell_command(["rmdir", "/s", "/q", str(folder)], platform=platform)
        + " (cmd.exe), or "
        + shell_command(["Remove-Item", "-Recurse", str(folder)], platform=platform)
        + " (PowerShell)"
    )
