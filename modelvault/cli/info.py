"""``info``: the version, the catalog used, the folders, and where each setting
comes from."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from modelvault import __version__
from modelvault.cli.common import EXIT_OK, settings_for, ui
from modelvault.cli.output import Line, table
from modelvault.config import ENV_PREFIX, Settings, default_data_dir, mask_password, shown_url
from modelvault.database import DatabaseManager
from modelvault.db.engine import sqlite_file
from modelvault.images import default_store


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
