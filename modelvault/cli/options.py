"""The options several commands share, each written once: the model a command
is about, a dry run and its confirmation, the conflict policy, the backup
before a write, a row limit."""

from __future__ import annotations

import argparse

from modelvault.cli.usage import positive_int
from modelvault.config import CONFLICT_POLICIES

MODEL_HELP = "its SHA-256 or the first digits of it, its path, or its file name"


def add_model(
    parser: argparse.ArgumentParser,
    *,
    nargs: str | None = None,
    help_text: str = MODEL_HELP,
) -> None:
    """The model (or, with ``nargs``, the models) a command is about, as a person names it."""
    dest = "model" if nargs is None else "models"
    parser.add_argument(dest, metavar="MODEL", nargs=nargs, help=help_text)


def add_dry_run(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--dry-run``: ``help_text`` says what the command would do, and that it does not."""
    parser.add_argument("--dry-run", action="store_true", help=help_text)


def add_confirmation(parser: argparse.ArgumentParser) -> None:
    """``--dry-run`` and ``-y/--yes`` of the commands that delete."""
    add_dry_run(parser, "say what would be deleted; change nothing")
    parser.add_argument(
        "-y", "--yes", action="store_true", help="do not ask (needed when not on a terminal)"
    )


def add_conflict(parser: argparse.ArgumentParser, *, what: str = "file") -> None:
    """``--conflict``: what to do when the content of a ``what`` is catalogued already."""
    parser.add_argument(
        "--conflict",
        choices=CONFLICT_POLICIES,
        help=f"when a {what}'s content is catalogued already: merge the notes and tags "
        "(default), keep the catalog's, or replace them",
    )


def add_no_backup(parser: argparse.ArgumentParser) -> None:
    """``--no-backup`` of the commands that back the catalog up before they write."""
    parser.add_argument(
        "--no-backup",
        action="store_true",
        help="do not back the catalog up first (by default it is, when it holds models)",
    )


def add_limit(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--limit N``: at most N rows of a listing."""
    parser.add_argument("--limit", type=positive_int, metavar="N", help=help_text)
