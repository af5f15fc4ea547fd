"""``init``, ``import``, ``migrate`` and ``worker``: a catalog created, a legacy
catalog read into it, and the queue hashed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelvault.cli.common import (
    EXIT_OK,
    NEEDS_ATTENTION,
    backup_first,
    describe_catalog,
    exit_code_for,
    open_catalog,
    progress_view,
    ui,
)
from modelvault.cli.output import Line, plural
from modelvault.cli.workers import finish_processing
from modelvault.database import DatabaseManager

if TYPE_CHECKING:
    from modelvault.legacy.reader import LegacyCatalog


WARNINGS_SHOWN = 5  # of an import's warnings, without -v


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
