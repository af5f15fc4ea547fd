"""``modelvault models`` and ``tags``: listings that say how much there is and never lie.

A page of the models that match (``--limit``, ``--offset``, ``--all``), in an
order (``--sort``), as a table, JSON (with ``total`` and ``truncated``), CSV
(the data as it is) or paths (one a line, escaped). A type or tag that no model
could match is refused, naming the ones there are, rather than answered with
an empty list. ``tags`` lists every tag with its colour and how many models
have it.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from collections.abc import Sequence
from typing import Any

from modelvault.catalog import curation
from modelvault.catalog.records import ModelRecord
from modelvault.cli.common import EXIT_OK, open_catalog, ui
from modelvault.cli.curate_parser import DEFAULT_LIMIT
from modelvault.cli.escaping import printable
from modelvault.cli.output import Line, Ui, human_bytes, table
from modelvault.cli.show import model_json
from modelvault.cli.usage import UsageError
from modelvault.database import DatabaseManager
from modelvault.errors import NotFoundError
from modelvault.normalize import COMFYUI_FOLDER_TYPES, normalize_tag_name

CSV_FIELDS = ("name", "type", "base", "size_bytes", "tags", "path", "sha256")


def page_size(args: argparse.Namespace) -> int | None:
    """How many models to list: ``--limit``, none with ``--all``, else the default."""
    if args.all and args.limit is not None:
        raise UsageError("give --all or --limit N, not both")
    if args.all:
        return None
    return int(args.limit or DEFAULT_LIMIT)


def output_format(args: argparse.Namespace) -> str:
    """``--format``, where ``--json`` is ``--format json``."""
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"--json and --format {args.format} ask for two forms: give one")
    return "json" if args.json else args.format or "table"


def filters(args: argparse.Namespace, db: DatabaseManager) -> dict[str, Any]:
    """The filters of ``find_models`` the options ask for, a type and tags that no
    model could match refused first (``NotFoundError``, naming those there are)."""
    if args.untagged and args.tag:
        raise UsageError("--untagged lists models without any tag: it cannot take --tag too")
    from modelvault.cli.identify_cli import known_base

    model_type = None if args.type is None else _known_type(db, args.type)
    for name in args.tag or ():
        if db.get_tag(name) is None:
            with db.session_scope() as session:
                known = curation.known_tags(session)
            raise NotFoundError(f"there is no tag {normalize_tag_name(name)!r}: {known}.")
    return {
        "tags": args.tag or (),
        "model_type": model_type,
        "search": args.search,
        "missing": args.missing,
        "unreachable": args.unreachable,
        "under": [os.path.expanduser(folder) for folder in args.under or ()],
        "untagged": args.untagged,
        "base": None if args.base is None else known_base(db, args.base),
    }


def _known_type(db: DatabaseManager, given: str) -> str:
    """The type as stored (any case given), or ``NotFoundError`` naming the types in use."""
    wanted = given.strip().lower()
    types = curation.known_types(db)
    if wanted in types:
        return wanted
    listed = ", ".join(f"{t} ({n})" for t, n in types.items()) or "none yet"
    folder = COMFYUI_FOLDER_TYPES.get(wanted)
    hint = f" ({wanted!r} is ComfyUI's folder of the type {folder!r})" if folder else ""
    raise NotFoundError(
        f"no model has the type {wanted!r}{hint}: the types in use are {listed} "
        "(see `modelvault types`)."
    )


def list_models(args: argparse.Namespace, db: DatabaseManager, out: Ui) -> None:
    """Print the page of models the options ask for."""
    form, limit = output_format(args), page_size(args)
    where = filters(args, db)
    models = db.find_models(**where, limit=limit, offset=args.offset, sort=args.sort)
    # A page that is not full ends the list: its end is the total, no count needed.
    page_ends_it = (limit is None or len(models) < limit) and (models or not args.offset)
    total = args.offset + len(models) if page_ends_it else db.count_models(**where)
    shown_to = args.offset + len(models)
    more = "" if shown_to >= total else f"; see more with --offset {shown_to}, or --all"
    if form == "json":
        data = {
            "models": [model_json(m) for m in models],
            "total": total,
            "offset": args.offset,
            "limit": limit,
            "truncated": shown_to < total,
        }
        out.emit(data, [])
    elif form in ("csv", "paths"):
        write_data(out, models, form)
        if more:
            out.err.print(f"modelvault: models {args.offset + 1}-{shown_to} of {total}{more}")
    elif not models:
        out.emit({}, [_nothing(args, total)])
    else:
        lines = model_table(out, models)
        if more or args.offset:
            lines.append(f"(models {args.offset + 1}-{shown_to} of {total}{more})")
        out.emit({}, lines)


def _nothing(args: argparse.Namespace, total: int) -> str:
    if total:
        return f"no models past the first {total}: --offset {args.offset} is beyond the end"
    filtered = [args.tag, args.type, args.search, args.missing, args.unreachable, args.under]
    return "no models match" if any(filtered) or args.untagged else "the catalog has no models yet"


def model_table(out: Ui, models: Sequence[ModelRecord]) -> list[Line]:
    rows: list[list[Line]] = [
        [
            m.name,
            m.type,
            human_bytes(m.size_bytes) if m.size_bytes is not None else "-",
            out.tag_list(m.tags),
            m.path,
        ]
        for m in models
    ]
    return table(["NAME", "TYPE", "SIZE", "TAGS", "PATH"], rows, right={2})


def write_data(out: Ui, models: Sequence[ModelRecord], form: str) -> None:
    """CSV with a header (RFC 4180: any value, line breaks included, as it is), or
    one path a line (escaped, so each path is one line)."""
    if form == "paths":
        out.emit_text("".join(printable(m.path) + "\n" for m in models))
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for m in models:
        tags = ";".join(t.name for t in m.tags)
        writer.writerow([m.name, m.type, m.base or "", m.size_bytes, tags, m.path, m.sha256])
    out.emit_text(buffer.getvalue())


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
    list_models(args, open_catalog(args, read_only=True), ui(args))
    return EXIT_OK
