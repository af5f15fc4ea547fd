"""The ``modelvault`` command: the only place that prints or exits.

Exit codes: 0 every row reached a final state; 1 finished, but rows are
``failed`` or ``conflict`` (or still waiting); 2 bad input or usage;
130 interrupted (run the same command again to continue).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from modelvault import __version__
from modelvault.config import CONFLICT_POLICIES, Settings
from modelvault.database import DatabaseManager, as_url
from modelvault.db.engine import is_sqlite, parse_url
from modelvault.db.models import PendingStatus
from modelvault.errors import ModelVaultError

EXIT_OK, EXIT_UNFINISHED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Rows that need a person (failed, conflict) or are still waiting: after a run
# meant to finish everything, either means "not done".
NEEDS_ATTENTION = (PendingStatus.FAILED.value, PendingStatus.CONFLICT.value)
UNFINISHED_STATUSES = (*NEEDS_ATTENTION, PendingStatus.PENDING.value, PendingStatus.CLAIMED.value)

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A bad option or argument: reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- output -------------------------------------------------------------------


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """One self-redrawing line on a terminal: files, bytes, rate and ETA."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False

    def draw(self, text: str, fraction: float | None) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        bar = ""
        if fraction is not None:
            cells = 24
            filled = int(cells * min(1.0, max(0.0, fraction)))
            bar = f"[{'#' * filled}{'-' * (cells - filled)}] {fraction:4.0%}  "
        line = (bar + text)[: width - 1]
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def importing(self, done: int, total: int) -> None:
        self.draw(f"importing legacy rows {done}/{total}", done / total if total else None)

    def hashing(self, status: Any) -> None:
        if status.state.value in ("idle", "importing", "failed"):
            return
        fraction = status.bytes_done / status.bytes_total if status.bytes_total else None
        paused = "  (paused)" if status.state.value == "paused" else ""
        self.draw(
            f"{status.files_done}/{status.files_total} files  "
            f"{human_bytes(status.bytes_done)}/{human_bytes(status.bytes_total)}  "
            f"{human_bytes(status.rate_bytes_per_second)}/s  "
            f"ETA {human_seconds(status.eta_seconds)}{paused}",
            fraction,
        )

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


def emit(args: argparse.Namespace, data: dict[str, Any], lines: Sequence[str]) -> None:
    """Print ``data`` as JSON with --json, else the human lines."""
    if args.json:
        print(json.dumps(data, indent=2, default=str, sort_keys=True))
    else:
        for line in lines:
            print(line)


def describe_import(report: dict[str, Any]) -> list[str]:
    lines = [
        f"legacy import: {report['rows_read']} rows read: {report['imported']} catalogued, "
        f"{report['merged']} merged, {report['moved']} moved, "
        f"{report['staged']} staged for hashing, "
        f"{report['duplicates']} duplicates, {report['conflicts']} conflicts, "
        f"{report['already_present']} already present; {report['tags_created']} tags created",
    ]
    clashes = report.get("color_clashes") or []
    if clashes:
        lines.append(f"  {len(clashes)} tag colours differ from the catalog's (kept in meta)")
    warnings = report.get("warnings") or []
    if warnings:
        first = warnings[0]
        lines.append(
            f"  {len(warnings) + report.get('warnings_omitted', 0)} warnings, e.g. legacy "
            f"{first['table']} {first['legacy_id']}: {first['reason']}"
        )
    return lines


def describe_catalog(db: DatabaseManager) -> tuple[dict[str, Any], list[str]]:
    catalog = db.catalog_counts()
    staging = db.staging_counts()
    waiting = ", ".join(f"{n} {status}" for status, n in staging.items() if n) or "empty"
    lines = [
        f"catalog {db.display_url}: {catalog['models']} models, {catalog['tags']} tags",
        f"staging: {waiting}",
    ]
    return {"catalog": catalog, "staging": staging}, lines


def exit_code_for(staging: dict[str, int], statuses: Sequence[str] = UNFINISHED_STATUSES) -> int:
    return EXIT_UNFINISHED if any(staging.get(s) for s in statuses) else EXIT_OK


# -- commands -----------------------------------------------------------------


def open_catalog(args: argparse.Namespace, *, create: bool = True) -> DatabaseManager:
    """The catalog named by --db or the settings, migrated to the newest schema.

    Commands that only look (``create=False``) refuse a SQLite file that does
    not exist, so a mistyped --db says so instead of creating an empty catalog.
    """
    settings = Settings.from_env(
        workers=getattr(args, "workers", None), conflict_policy=getattr(args, "conflict", None)
    )
    url = parse_url(as_url(args.db) if args.db else settings.db_url)
    database = url.database
    if not create and is_sqlite(url) and database and not Path(database).exists():
        raise ModelVaultError(
            f"there is no catalog at {database}: check --db, or create one with "
            "'modelvault init' or 'modelvault migrate LEGACY'."
        )
    db = DatabaseManager(args.db or None, settings=settings)
    db.init_db()
    args.work_started = True  # from here on, an error is not bad input
    return db


def check_legacy_file(path: str) -> None:
    """Refuse a bad legacy file before anything is created or written."""
    from modelvault.migration.legacy import open_legacy

    open_legacy(path).close()


def cmd_init(args: argparse.Namespace) -> int:
    db = open_catalog(args)
    revision = db.current_revision()
    emit(
        args,
        {"catalog": db.display_url, "revision": revision},
        [f"catalog ready at {db.display_url} (schema {revision})"],
    )
    return EXIT_OK


def run_import(args: argparse.Namespace, db: DatabaseManager) -> dict[str, Any]:
    from modelvault.migration.importer import import_legacy_data

    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.json else None
    try:
        report = import_legacy_data(
            args.legacy,
            db,
            progress=bar.importing if bar else None,
            policy=getattr(args, "conflict", None),
        )
    finally:
        if bar:
            bar.close()
    return report.to_dict()


def cmd_import(args: argparse.Namespace) -> int:
    check_legacy_file(args.legacy)
    db = open_catalog(args)
    report = run_import(args, db)
    counts, lines = describe_catalog(db)
    # Staged rows are the point of stage 1; only rows that need a person count.
    code = exit_code_for(counts["staging"], NEEDS_ATTENTION)
    emit(args, {"import": report, **counts, "exit_code": code}, describe_import(report) + lines)
    return code


def run_workers(
    args: argparse.Namespace, db: DatabaseManager
) -> tuple[dict[str, Any] | None, bool]:
    """Stage 2 under a MigrationManager with a progress bar; Ctrl-C stops cleanly.

    Returns the worker report and whether the run was interrupted.
    """
    from modelvault.migration.manager import MigrationManager, MigrationState

    manager = MigrationManager.for_database(db)
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.json else None
    unsubscribe = manager.subscribe(bar.hashing) if bar else None
    interrupted = False
    try:
        manager.start_processing(workers=args.workers, policy=args.conflict)
        try:
            while not manager.wait(0.25):
                pass
        except KeyboardInterrupt:
            interrupted = True
            if bar:
                bar.close()
            print(
                "modelvault: interrupted: finishing the current step and releasing files...",
                file=sys.stderr,
            )
            manager.stop()
            manager.wait()
    finally:
        if unsubscribe:
            unsubscribe()
    status = manager.status()
    if bar:
        bar.hashing(status)  # the last frame: progress events are throttled
        bar.close()
    if status.state is MigrationState.FAILED:
        raise ModelVaultError(status.error or "the workers failed")
    return status.worker_report, interrupted or status.state is MigrationState.STOPPED


def describe_workers(report: dict[str, Any] | None) -> list[str]:
    if not report:
        return []
    outcomes = (
        ", ".join(
            f"{report.get(k, 0)} {k}"
            for k in (
                "imported",
                "merged",
                "moved",
                "replaced",
                "duplicate",
                "conflict",
                "missing",
                "failed",
                "retried",
            )
            if report.get(k)
        )
        or "nothing to do"
    )
    return [
        f"hashing: {report.get('files_hashed', 0)} files, "
        f"{human_bytes(report.get('bytes_hashed', 0))} "
        f"in {report.get('seconds', 0):.1f} s: {outcomes}"
    ]


def finish_processing(
    args: argparse.Namespace, db: DatabaseManager, data: dict[str, Any], lines: list[str]
) -> int:
    worker_report, interrupted = run_workers(args, db)
    counts, catalog_lines = describe_catalog(db)
    code = EXIT_INTERRUPTED if interrupted else exit_code_for(counts["staging"])
    lines = lines + describe_workers(worker_report) + catalog_lines
    if interrupted:
        lines.append("interrupted: run the same command again to continue where it stopped")
    elif code == EXIT_UNFINISHED:
        lines.append("some rows need attention: see 'modelvault pending --status failed conflict'")
    emit(args, {**data, "worker": worker_report, **counts, "exit_code": code}, lines)
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    check_legacy_file(args.legacy)
    db = open_catalog(args)
    report = run_import(args, db)
    return finish_processing(args, db, {"import": report}, describe_import(report))


def cmd_worker(args: argparse.Namespace) -> int:
    db = open_catalog(args)
    return finish_processing(args, db, {}, [])


def cmd_status(args: argparse.Namespace) -> int:
    db = open_catalog(args, create=False)
    counts, lines = describe_catalog(db)
    emit(args, {"url": db.display_url, **counts}, lines)
    return EXIT_OK


def cmd_pending(args: argparse.Namespace) -> int:
    db = open_catalog(args, create=False)
    rows = db.get_pending_imports(args.status, limit=args.limit)
    lines = [
        f"{row.status:<9} {row.attempts:>2}  {row.path}"
        + (f"  ({row.last_error})" if row.last_error else "")
        for row in rows
    ] or ["no staging rows" + (f" with status {', '.join(args.status)}" if args.status else "")]
    emit(args, {"rows": [row.to_dict() for row in rows]}, lines)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    from modelvault.migration.worker import retry_pending

    db = open_catalog(args, create=False)
    statuses = tuple(args.status or ("failed", "missing"))
    count = retry_pending(db, statuses=statuses)
    emit(
        args,
        {"requeued": count, "statuses": list(statuses)},
        [f"{count} rows put back in the queue; run 'modelvault worker' to hash them"],
    )
    return EXIT_OK


def cmd_tags(args: argparse.Namespace) -> int:
    db = open_catalog(args, create=False)
    tags = db.list_tags()
    lines = [f"{tag.color or '-':<8} {count:>6}  {tag.name}" for tag, count in tags] or ["no tags"]
    emit(args, {"tags": [{"name": t.name, "color": t.color, "models": n} for t, n in tags]}, lines)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from modelvault.migration.demo import build_demo

    folder = Path(args.dir).expanduser().resolve()
    if not args.db:
        args.db = str(folder / "catalog.sqlite3")
    open_catalog(args).dispose()  # a catalog we cannot write fails before files are made
    args.work_started = False
    try:
        legacy = build_demo(folder, file_mb=args.file_mb)
    except OSError as exc:
        raise ModelVaultError(
            f"cannot build the demo in {folder}: {exc.strerror or exc}; choose another folder."
        ) from exc
    if not args.json:
        print(f"demo: legacy catalog and model files in {folder}")
    args.legacy = str(legacy)
    return cmd_migrate(args)


def cmd_scan(args: argparse.Namespace) -> int:
    """Stage new and changed model files (none is read); with --hash, hash them too."""
    from modelvault.scan import resolve_roots, scan_roots

    roots = resolve_roots(args.roots, comfyui=args.comfyui, settings=Settings.from_env())
    db = open_catalog(args)
    report = scan_roots(db, roots).to_dict()
    lines = [
        f"scan: {report['files_seen']} model files in {len(report['roots'])} folders: "
        f"{report['unchanged']} unchanged, {report['staged']} staged "
        f"({report['staged_new']} new, {report['staged_changed']} changed, "
        f"{report['requeued']} again), {report['already_staged']} waiting already, "
        f"{report['missing']} missing (kept in the catalog)",
        *(f"  missing: {path}" for path in report["missing_paths"][:10]),
        *(f"  symlink loop: {text}" for text in report["loops"]),
        *(f"  not scanned: {text}" for text in report["skipped"]),
        *(f"  unreadable: {text}" for text in report["unreadable"]),
    ]
    if args.hash:
        return finish_processing(args, db, {"scan": report}, lines)
    if report["staged"]:
        lines.append("run 'modelvault worker' (or scan with --hash) to hash the staged files")
    emit(args, {"scan": report, "exit_code": EXIT_OK}, lines)
    return EXIT_OK


# -- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--db",
        metavar="URL|PATH",
        help="catalog: a SQLAlchemy URL or a SQLite file (default: settings)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON report instead of text")
    workers = _Parser(add_help=False)
    workers.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="hashing threads (default: MODELVAULT_WORKERS or min(4, CPUs))",
    )
    workers.add_argument(
        "--conflict",
        choices=CONFLICT_POLICIES,
        help="content already catalogued: merge (default), keep or replace",
    )

    parser = _Parser(
        prog="modelvault",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="exit codes: 0 done; 1 rows failed or in conflict; 2 bad input; 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"modelvault {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(
        name: str,
        handler: Handler,
        help_text: str,
        *parents: _Parser,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common, *parents])
        p.set_defaults(handler=handler)
        return p

    command("init", cmd_init, "create or upgrade the catalog")
    command(
        "import", cmd_import, "stage 1: read a legacy catalog into the catalog and the queue"
    ).add_argument("legacy", metavar="LEGACY", help="the legacy hikaze_mm.sqlite3 file")
    command(
        "migrate", cmd_migrate, "both stages: import a legacy catalog, then hash the queue", workers
    ).add_argument("legacy", metavar="LEGACY", help="the legacy hikaze_mm.sqlite3 file")
    command(
        "worker",
        cmd_worker,
        "stage 2 only: hash the queued files (run on several hosts against one PostgreSQL catalog)",
        workers,
    )
    command("status", cmd_status, "counts of models, tags and queued rows")
    pending = command("pending", cmd_pending, "list queued rows")
    pending.add_argument(
        "--status",
        nargs="+",
        choices=[s.value for s in PendingStatus],
        help="only rows in these statuses",
    )
    pending.add_argument("--limit", type=_positive_int, metavar="N", help="at most N rows")
    command("retry", cmd_retry, "put failed and missing rows back in the queue").add_argument(
        "--status",
        nargs="+",
        choices=["failed", "missing", "conflict"],
        help="which rows to retry (default: failed missing)",
    )
    command("tags", cmd_tags, "list tags with colours and counts")
    scan = command(
        "scan", cmd_scan, "stage new and changed model files (unchanged ones are not read)", workers
    )
    scan.add_argument(
        "roots",
        metavar="ROOT",
        nargs="*",
        help="folders to scan (default: --comfyui, else MODELVAULT_MODEL_ROOTS)",
    )
    scan.add_argument(
        "--comfyui",
        metavar="DIR",
        help="a ComfyUI folder: its models/ and the folders of its extra_model_paths.yaml",
    )
    scan.add_argument("--hash", action="store_true", help="then hash what was staged")
    demo = command(
        "demo", cmd_demo, "build a sample legacy catalog with model files and migrate it", workers
    )
    demo.add_argument(
        "dir",
        metavar="DIR",
        nargs="?",
        default="modelvault-demo",
        help="where to build it (default: ./modelvault-demo)",
    )
    demo.add_argument(
        "--file-mb",
        type=_positive_float,
        default=48.0,
        metavar="MB",
        help="average size of the sample model files (default: 48)",
    )
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 256")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            raise UsageError(
                "no command given: use one of init, import, migrate, worker, "
                "status, pending, retry, tags, scan, demo (see 'modelvault --help')"
            )
        handler: Handler = args.handler
        return handler(args)
    except UsageError as exc:
        print(f"modelvault: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModelVaultError as exc:
        # Before the catalog is open, an error is bad input (nothing was written);
        # after, the run itself failed.
        print(f"modelvault: error: {exc}", file=sys.stderr)
        started = args is not None and getattr(args, "work_started", False)
        return EXIT_UNFINISHED if started else EXIT_USAGE
    except KeyboardInterrupt:
        print("modelvault: interrupted: run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
