"""``show``: everything about one model, its fields one a line, labels aligned."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from rich.text import Text

from modelvault.catalog.records import ModelRecord
from modelvault.cli.common import EXIT_OK, open_catalog, ui
from modelvault.cli.escaping import printable
from modelvault.cli.output import Line, Ui, human_bytes
from modelvault.database import DatabaseManager
from modelvault.errors import ModelVaultError, NotFoundError
from modelvault.file_stamp import FILE_STAT
from modelvault.presence import PRESENT, FileCheck, FileState, check_file


def model_json(model: ModelRecord, file: FileCheck | None = None) -> dict[str, Any]:
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
        **model_json(model, file),
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
