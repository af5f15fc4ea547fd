"""``demo``: a sample legacy catalog with model files written into a new folder,
then migrated."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from modelvault.cli.common import settings_for, ui
from modelvault.cli.migrate import cmd_migrate
from modelvault.cli.output import shell_command
from modelvault.database import DatabaseManager
from modelvault.db.engine import sqlite_file
from modelvault.db.sqlite_files import path_problem
from modelvault.errors import ModelVaultError


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
