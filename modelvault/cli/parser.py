"""The command line's grammar: commands, their options, and the help people read.

``build_parser`` adds the commands in the order ``--help`` lists them, one group
at a time; each group's options are written where its commands are, and the
options several commands share once, in ``modelvault.cli.options``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NamedTuple

from modelvault import __version__
from modelvault.cli import curate as cu
from modelvault.cli.curate_parser import (
    EXAMPLES,
    Command,
    add_curating_commands,
    add_listing_options,
    add_tag_actions,
    examples,
)
from modelvault.cli.demo import cmd_demo
from modelvault.cli.identify_cli import add_identify_commands
from modelvault.cli.info import cmd_info
from modelvault.cli.keep import add_keeping_commands
from modelvault.cli.listing import cmd_models, cmd_tags
from modelvault.cli.migrate import cmd_import, cmd_init, cmd_migrate, cmd_worker
from modelvault.cli.options import (
    add_confirmation,
    add_conflict,
    add_dry_run,
    add_limit,
    add_model,
    add_no_backup,
)
from modelvault.cli.scan_cli import cmd_scan
from modelvault.cli.serve import add_serve_command
from modelvault.cli.show import cmd_show
from modelvault.cli.status import cmd_pending, cmd_retry, cmd_status
from modelvault.cli.usage import Parser as _Parser
from modelvault.cli.usage import UsageError as UsageError  # raised by commands, caught by main
from modelvault.db.models import PendingStatus

Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = (
    "Keep a catalog of your AI model files, known by the SHA-256 of their content, "
    "with coloured tags and notes; migrate the legacy hikaze_mm.sqlite3 catalog into it."
)
EPILOG = (
    "Options such as --db, --json, -q and -v go before or after the command. "
    "'modelvault COMMAND --help' shows a command's own options. "
    "Exit codes: 0 done; 1 rows failed or are in conflict; 2 bad input; 130 interrupted."
)
LEGACY_HELP = (
    "the legacy catalog: custom_nodes/<the extension's folder>/data/hikaze_mm.sqlite3 "
    "in your ComfyUI folder"
)


def add_global_options(parser: argparse.ArgumentParser, *, on_command: bool) -> None:
    """--db, --json, -q, -v: on the top parser with defaults; on each command with
    ``SUPPRESS`` so an option given before the command is not reset after it."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if on_command else value

    parser.add_argument(
        "--db",
        metavar="URL|PATH",
        default=default(None),
        help="the catalog: a SQLite file or a database URL such as "
        "postgresql://user@host/db (default: MODELVAULT_DB_URL or MODELVAULT_DB_PATH, "
        "else modelvault.sqlite3 in your data folder; see 'modelvault info')",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document on stdout instead of text (for scripts)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="no progress and no running commentary; results and errors only",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="say what the library does on stderr (-vv for more); list every import warning "
        "and each file a scan finds changed",
    )


class Parents(NamedTuple):
    """Option blocks that commands take as argparse parents."""

    on_command: _Parser  # the global options, also after the command
    workers: _Parser  # --workers, --conflict: the commands that hash
    destructive: _Parser  # --dry-run, --yes: the commands that delete
    legacy: _Parser  # LEGACY, --images: the commands that read a legacy catalog


def _parents() -> Parents:
    on_command = _Parser(add_help=False)
    add_global_options(on_command, on_command=True)
    workers = _Parser(add_help=False)
    workers.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="files hashed at once (default: MODELVAULT_WORKERS, else up to 4)",
    )
    add_conflict(workers)
    destructive = _Parser(add_help=False)
    add_confirmation(destructive)
    legacy = _Parser(add_help=False)
    legacy.add_argument("legacy", metavar="LEGACY", help=LEGACY_HELP)
    legacy.add_argument(
        "--images",
        metavar="DIR",
        help="the legacy preview images (default: the images/ folder beside LEGACY)",
    )
    return Parents(on_command, workers, destructive, legacy)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelvault", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"modelvault {__version__}")
    add_global_options(parser, on_command=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parents = _parents()
    command = _command_adder(sub, parents.on_command)
    add_migration_commands(command, parents)
    add_catalog_commands(command)
    add_queue_commands(command, parents)
    tags = command(
        "tags",
        cmd_tags,
        "list the tags with their colours and how many models have each; rename, "
        "recolour or delete one",
    )
    add_tag_actions(tags, parents.on_command, parents.destructive)
    add_curating_commands(command, parents.destructive)
    add_identify_commands(command)
    add_keeping_commands(command)
    add_serve_command(command)
    add_scan_command(command, parents.workers)
    add_about_commands(command, parents.workers)
    return parser


def _command_adder(sub: argparse._SubParsersAction[_Parser], on_command: _Parser) -> Command:
    """``command(name, handler, help, *parents)``: a command with the global options,
    its examples and its handler."""

    def command(
        name: str, handler: Handler, help_text: str, *parents: _Parser
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[on_command, *parents],
            epilog=examples(EXAMPLES.get(name, ())),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    return command


def add_migration_commands(command: Command, parents: Parents) -> None:
    """init, import, migrate, worker."""
    command("init", cmd_init, "create the catalog, or upgrade it to this version")
    add_no_backup(
        command(
            "import",
            cmd_import,
            "step 1 only: read a legacy catalog into the catalog and the queue",
            parents.legacy,
        )
    )
    add_no_backup(
        command(
            "migrate",
            cmd_migrate,
            "migrate a legacy catalog: import it, then hash the files it could not vouch for",
            parents.workers,
            parents.legacy,
        )
    )
    command(
        "worker",
        cmd_worker,
        "step 2 only: hash the queued files (run it on several computers against one "
        "PostgreSQL catalog)",
        parents.workers,
    )


def add_catalog_commands(command: Command) -> None:
    """status, models, show."""
    command("status", cmd_status, "how many models and tags, and what waits in the queue")
    add_listing_options(command("models", cmd_models, "list the catalogued models"))
    show = command(
        "show",
        cmd_show,
        "everything about one model: tags, notes, prompts, previews, where it came from, "
        "its other copies; or the queued rows of that name or path",
    )
    add_model(show)


def add_queue_commands(command: Command, parents: Parents) -> None:
    """pending (and pending forget), retry."""
    pending = command("pending", cmd_pending, "list the queue: files waiting or that failed")
    pending.add_argument(
        "--status",
        nargs="+",
        choices=[s.value for s in PendingStatus],
        help="only rows in these states",
    )
    add_limit(pending, "at most N rows")
    pending_sub = pending.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    forget = pending_sub.add_parser(
        "forget",
        help="delete queued rows (their files stay; each row is kept in 'modelvault deleted')",
        description="delete queued rows: the files stay where they are, and each row, with "
        "its tags and notes, is kept in 'modelvault deleted'",
        parents=[parents.on_command, parents.destructive],
        epilog=examples(EXAMPLES["pending forget"]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    forget.set_defaults(handler=cu.cmd_pending_forget)
    forget.add_argument("rows", metavar="ID|PATH", nargs="*", help="rows by id or path")
    forget.add_argument(
        "--status",
        dest="forget_status",
        nargs="+",
        choices=[s.value for s in PendingStatus if s is not PendingStatus.CLAIMED],
        help="every row in these states",
    )
    command("retry", cmd_retry, "put failed and missing files back in the queue").add_argument(
        "--status",
        nargs="+",
        choices=["failed", "missing", "conflict"],
        help="which rows to retry (default: failed missing)",
    )


def add_scan_command(command: Command, workers: _Parser) -> None:
    scan = command(
        "scan",
        cmd_scan,
        "keep the catalog in sync: stage new and changed model files (unchanged ones are "
        "not read); --hash then hashes them",
        workers,
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
        help="a ComfyUI folder: its models/, its output/ model folders and the folders "
        "of its extra_model_paths.yaml",
    )
    scan.add_argument(
        "--extra-model-paths-config",
        action="append",
        nargs="+",
        metavar="FILE",
        help="also the folders this file lists, in the form of ComfyUI's "
        "extra_model_paths.yaml (as ComfyUI's own option; ComfyUI Desktop's is "
        "extra_models_config.yaml); repeatable",
    )
    scan.add_argument(
        "--type",
        metavar="TYPE",
        help="give every file found this type (e.g. lora) instead of its folder's",
    )
    scan.add_argument("--hash", action="store_true", help="then hash what was staged")
    add_no_backup(scan)
    add_dry_run(scan, "say what would be staged, moved and reported; write nothing")


def add_about_commands(command: Command, workers: _Parser) -> None:
    """info, demo."""
    command(
        "info",
        cmd_info,
        "version, which catalog is used, the data and image folders, and every setting",
    )
    demo = command(
        "demo",
        cmd_demo,
        "try it out: write a sample legacy catalog with model files into a new folder "
        "and migrate it (the catalog is DIR/catalog.sqlite3 unless --db is given)",
        workers,
    )
    demo.add_argument(
        "dir",
        metavar="DIR",
        nargs="?",
        default="modelvault-demo",
        help="a new or empty folder, or an earlier demo's (default: ./modelvault-demo)",
    )
    demo.add_argument(
        "--file-mb",
        type=_positive_float,
        default=48.0,
        metavar="MB",
        help="average size of the sample model files (default: 48)",
    )


def command_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


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
