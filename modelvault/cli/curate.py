"""The commands that change what the catalog says: tags, notes, fields, deletions.

Each change is one transaction (``modelvault.catalog.curation``). Bad input (a model or
tag that is not there, a bad colour) is one sentence and exit code 2, with
nothing written. The commands that delete (``rm``, ``tags delete``, ``tags
rename --merge``, ``pending forget``) first print what they will do; with
``--dry-run`` they stop there (the catalog opened read-only), on a terminal
they ask, and otherwise they need ``--yes``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from modelvault.catalog import curation
from modelvault.catalog.records import ModelRecord, PendingRecord
from modelvault.catalog.tags import TagSpec
from modelvault.cli.common import EXIT_OK, EXIT_UNFINISHED, open_catalog, ui
from modelvault.cli.escaping import printable
from modelvault.cli.output import Line, human_bytes, plural, shell_command, table
from modelvault.cli.show import NOTES, aligned, note_lines
from modelvault.cli.usage import UsageError
from modelvault.database import DatabaseManager
from modelvault.errors import CatalogError, ModelVaultError, NotFoundError
from modelvault.normalize import normalize_color

T = TypeVar("T")
PLAN_ROWS = 20  # rows a plan lists before it says how many more


# -- opening, writing, confirming -------------------------------------------------


def open_for_change(args: argparse.Namespace, *, looking: bool = False) -> DatabaseManager:
    """The catalog, which must exist; read-only for ``--dry-run`` (or when ``looking``).
    An error from here to the write is bad input (exit 2): nothing has been written."""
    read_only = looking or getattr(args, "dry_run", False)
    db = open_catalog(args, read_only=read_only, must_exist=True)
    args.work_started = False
    return db


def change(args: argparse.Namespace, call: Callable[[], T]) -> T:
    """Make the change: refused input stays exit 2, a catalog that fails is exit 1."""
    try:
        return call()
    except CatalogError:
        args.work_started = True
        raise


def go_ahead(
    args: argparse.Namespace, plan: Sequence[Line], data: dict[str, Any], ask: str, doing: str
) -> bool:
    """Show what a deleting command will do; True if it may do it now.

    ``--dry-run``: the plan is the output. ``--yes``: go. On a terminal: ask
    (anything but y or yes is no). Elsewhere: refused, nothing written.
    """
    out = ui(args)
    if args.dry_run:
        out.emit(
            {**data, "dry_run": True},
            [*plan, "dry run: nothing was changed; run it again without --dry-run to do it"],
        )
        return False
    on_terminal = sys.stdin.isatty() and sys.stderr.isatty()
    if not (args.yes or on_terminal):
        raise UsageError(
            f"{doing}: confirm with --yes when not on a terminal (see what it would do "
            "with --dry-run)"
        )
    if not (out.quiet or out.json) or not args.yes:
        for line in plan:
            out.err.print(printable(line) if isinstance(line, str) else line)
    if args.yes:
        return True
    out.err.print(f"{ask} [y/N] ", end="")
    answer = sys.stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    out.emit({**data, "done": False}, ["nothing was changed"])
    return False


def model_line(model: ModelRecord) -> list[Line]:
    size = human_bytes(model.size_bytes) if model.size_bytes is not None else "-"
    return [model.name, model.type, size, model.path]


def model_table(models: Sequence[ModelRecord]) -> list[Line]:
    return table(["NAME", "TYPE", "SIZE", "PATH"], [model_line(m) for m in models], right={2})


# -- one model: tags, notes, fields -------------------------------------------------


def cmd_tag(args: argparse.Namespace) -> int:
    color = normalize_color(args.color)  # a bad colour is refused before anything is opened
    db = open_for_change(args)
    model = db.find_model(args.model)
    record, added = change(args, lambda: curation.add_tags(db, model.sha256, args.tags, color))
    had = [t for t in record.tags if t.name not in added and t.name in _names(args.tags)]
    lines: list[Line] = [
        f"{record.name}: tagged {', '.join(added)}" if added else f"{record.name}: no new tag",
    ]
    if had:
        lines.append(f"  carried already: {', '.join(t.name for t in had)}")
    kept = [t for t in record.tags if color and t.name in _names(args.tags) and t.color != color]
    lines += [
        f"  the tag {t.name!r} keeps its colour {t.color}: change it with "
        + shell_command(["modelvault", "tags", "color", t.name, color or ""])
        for t in kept
    ]
    ui(args).emit({"model": record.to_dict(), "added": added}, lines)
    return EXIT_OK


def cmd_untag(args: argparse.Namespace) -> int:
    db = open_for_change(args)
    model = db.find_model(args.model)
    record, removed = change(args, lambda: curation.remove_tags(db, model.sha256, args.tags))
    absent = [name for name in _names(args.tags) if name not in removed]
    lines: list[Line] = [
        f"{record.name}: untagged {', '.join(removed)}"
        if removed
        else f"{record.name}: no tag removed",
    ]
    if absent:
        lines.append(f"  did not carry: {', '.join(absent)}")
    ui(args).emit({"model": record.to_dict(), "removed": removed}, lines)
    return EXIT_OK


def _names(tags: Sequence[str]) -> list[str]:
    return [name.strip().lower() for name in tags]


def cmd_note(args: argparse.Namespace) -> int:
    given = [args.text is not None, args.edit, args.clear]
    if sum(given) > 1:
        raise UsageError("give the note as TEXT, or --edit, or --clear: one of them")
    db = open_for_change(args, looking=not any(given))
    model = db.find_model(args.model)
    current = model.meta.get(curation.NOTE)
    current_text = current if isinstance(current, str) else ""
    if not any(given):
        ui(args).emit({"note": current}, [current_text] if current_text else ["(no note)"])
        return EXIT_OK
    note = "" if args.clear else args.text if args.text is not None else edit_text(current_text)
    if note == current_text:
        ui(args).emit(
            {"model": model.to_dict(), "changed": False}, [f"{model.name}: note unchanged"]
        )
        return EXIT_OK
    record = change(args, lambda: curation.update_model(db, model.sha256, note=note))
    said = "note removed" if not note else "note saved"
    ui(args).emit({"model": record.to_dict(), "changed": True}, [f"{record.name}: {said}"])
    return EXIT_OK


def editor_command(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """The user's editor (``VISUAL``, then ``EDITOR``; ``vi``, or Notepad on Windows)."""
    chosen = environ.get("VISUAL", "").strip() or environ.get("EDITOR", "").strip()
    if not chosen:
        return ["notepad"] if sys.platform == "win32" else ["vi"]
    return shlex.split(chosen, posix=sys.platform != "win32")


def edit_text(text: str) -> str:
    """``text`` after the user edited it in their editor (trailing blank lines dropped)."""
    command = editor_command()
    fd, name = tempfile.mkstemp(prefix="modelvault-note-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text + ("\n" if text else ""))
        try:
            result = subprocess.run([*command, name], check=False)
        except OSError as exc:
            raise ModelVaultError(
                f"cannot start the editor {command[0]!r} ({exc.strerror or exc}): set EDITOR "
                "to one that is installed, or give the note as TEXT."
            ) from exc
        if result.returncode != 0:
            raise ModelVaultError(
                f"the editor {command[0]!r} exited with code {result.returncode}: "
                "the note was left as it was."
            )
        return Path(name).read_text(encoding="utf-8").rstrip("\n")
    finally:
        os.unlink(name)


def cmd_edit(args: argparse.Namespace) -> int:
    changes = {
        key: value
        for key, value in (("name", args.name), ("type", args.type), ("base", args.base))
        if value is not None
    }
    if not changes:
        raise UsageError("nothing to change: give --name, --type or --base")
    db = open_for_change(args)
    model = db.find_model(args.model)
    record = change(args, lambda: curation.update_model(db, model.sha256, **changes))
    lines: list[Line] = [
        f"{record.name}: {key} {getattr(model, key) or '-'} -> {getattr(record, key) or '-'}"
        for key in changes
        if getattr(model, key) != getattr(record, key)
    ] or [f"{record.name}: nothing changed"]
    ui(args).emit({"model": record.to_dict()}, lines)
    return EXIT_OK


# -- deleting -------------------------------------------------------------------------


def cmd_rm(args: argparse.Namespace) -> int:
    db = open_for_change(args)
    models = list({m.sha256: m for m in (db.find_model(key) for key in args.models)}.values())
    plan: list[Line] = [
        f"{'would remove' if args.dry_run else 'removing'} {_entries(len(models))} "
        "(the files stay where they are; each entry is kept in 'modelvault deleted'):",
        *model_table(models),
    ]
    for m in models:
        copies = db.find_copies(m.sha256).queued
        if copies:
            ids = ", ".join(str(r.id) for r in copies)
            plan.append(
                f"  {m.name}: {plural(len(copies), 'other file holds', 'other files hold')} "
                f"its content, queued (rows {ids}): they stay queued (see 'modelvault dupes')"
            )
    data = {"models": [m.to_dict() for m in models]}
    ask = f"Remove {plural(len(models), 'entry', 'entries')}?"
    if not go_ahead(args, plan, data, ask, "rm removes catalog entries"):
        return EXIT_OK if args.dry_run else EXIT_UNFINISHED
    shas = [m.sha256 for m in models]
    gone = change(args, lambda: curation.delete_models(db, shas))
    ui(args).emit(
        {"deleted": [m.to_dict() for m in gone], "dry_run": False},
        [f"removed {_entries(len(gone))}; the files were not touched"],
    )
    return EXIT_OK


def _entries(count: int) -> str:
    return plural(count, "catalog entry", "catalog entries")


def cmd_deleted(args: argparse.Namespace) -> int:
    db = open_catalog(args, read_only=True)
    entries = curation.deleted_records(db, limit=args.limit)
    rows: list[list[Line]] = [
        [e.deleted_at.astimezone().strftime("%Y-%m-%d %H:%M"), e.kind, e.name, e.path]
        for e in entries
    ]
    lines = (
        table(["DELETED", "KIND", "NAME", "PATH"], rows, right=set())
        if entries
        else ["nothing was deleted"]
    )
    data = {
        "deleted": [
            {**e.record, "kind": e.kind, "deleted_at": e.deleted_at.isoformat(), "id": e.id}
            for e in entries
        ]
    }
    ui(args).emit(data, lines)
    return EXIT_OK


def cmd_pending_forget(args: argparse.Namespace) -> int:
    if not args.rows and not args.forget_status:
        raise UsageError("give the rows to forget: their ids or paths, or --status S")
    db = open_for_change(args)
    ids = [_row_id(db, key) for key in args.rows]
    statuses = args.forget_status or []
    rows = curation.rows_to_forget(db, ids, statuses=statuses)
    plan: list[Line] = [
        f"{'would forget' if args.dry_run else 'forgetting'} {plural(len(rows), 'queued row')} "
        "(their files stay; each row, tags and notes, is kept in 'modelvault deleted'):",
        *pending_table(rows[:PLAN_ROWS]),
    ]
    if len(rows) > PLAN_ROWS:
        plan.append(f"  ... and {len(rows) - PLAN_ROWS} more")
    data = {"rows": [r.to_dict() for r in rows]}
    ask = f"Forget {plural(len(rows), 'row')}?"
    if not go_ahead(args, plan, data, ask, "pending forget deletes queued rows"):
        return EXIT_OK if args.dry_run else EXIT_UNFINISHED
    gone = change(args, lambda: curation.forget_pending(db, ids, statuses=statuses))
    ui(args).emit(
        {"forgotten": [r.to_dict() for r in gone], "dry_run": False},
        [f"forgot {plural(len(gone), 'queued row')}"],
    )
    return EXIT_OK


def _row_id(db: DatabaseManager, key: str) -> int:
    """A queued row named by its id or its path."""
    if key.isdigit():
        return int(key)
    absolute = os.path.abspath(key)
    found = curation.find_queued(db, key, absolute=absolute)
    rows = [r for r in found if r.path in (key, absolute)]
    if not rows:
        raise NotFoundError(
            f"no queued row has the path {key!r}: see the queue with `modelvault pending`."
        )
    return rows[0].id


def pending_table(rows: Sequence[PendingRecord]) -> list[Line]:
    return table(
        ["ID", "STATUS", "TRIES", "PATH", "LAST ERROR"],
        [[str(r.id), r.status, str(r.attempts), r.path, r.last_error or ""] for r in rows],
        right={0, 2},
    )


# -- tags ---------------------------------------------------------------------------


def cmd_tags_rename(args: argparse.Namespace) -> int:
    db = open_for_change(args)
    if args.merge:
        into = _tag_count(db, args.new)
        source = _tag_count(db, args.old)
        plan: list[Line] = [
            f"{'would merge' if args.dry_run else 'merging'} the tag {source[0]!r} "
            f"({plural(source[1], 'model')}) into {into[0]!r} ({plural(into[1], 'model')}); "
            f"{source[0]!r} is then deleted"
        ]
        data = {"old": source[0], "new": into[0]}
        if not go_ahead(args, plan, data, "Merge?", "tags rename --merge deletes a tag"):
            return EXIT_OK if args.dry_run else EXIT_UNFINISHED
    elif args.dry_run:
        old, count = _tag_count(db, args.old)
        ui(args).emit(
            {"old": old, "dry_run": True},
            [f"would rename {old!r} ({plural(count, 'model')}); dry run: nothing was changed"],
        )
        return EXIT_OK
    done = change(args, lambda: curation.rename_tag(db, args.old, args.new, merge=args.merge))
    verb = "merged into" if args.merge else "renamed to"
    ui(args).emit(
        {"tag": _tag_json(done.tag, done.models), "queued": done.queued},
        [f"{args.old.strip().lower()!r} {verb} {done.tag.name!r} ({plural(done.models, 'model')})"],
    )
    return EXIT_OK


def cmd_tags_color(args: argparse.Namespace) -> int:
    colour = None if args.color.strip().lower() == "none" else args.color
    normalize_color(colour)
    db = open_for_change(args)
    tag = change(args, lambda: curation.set_tag_color(db, args.tag, colour))
    ui(args).emit(
        {"tag": _tag_json(tag, None)},
        [f"{tag.name!r}: {'colour ' + tag.color if tag.color else 'no colour'}"],
    )
    return EXIT_OK


def cmd_tags_delete(args: argparse.Namespace) -> int:
    db = open_for_change(args)
    tags = [_tag_count(db, name) for name in args.tags]
    plan: list[Line] = [
        f"{'would delete' if args.dry_run else 'deleting'} {plural(len(tags), 'tag')} "
        "(the models stay, without them):",
        *[f"  {name} ({plural(count, 'model')})" for name, count in tags],
    ]
    data = {"tags": [{"name": n, "models": c} for n, c in tags]}
    ask = f"Delete {plural(len(tags), 'tag')}?"
    if not go_ahead(args, plan, data, ask, "tags delete deletes tags"):
        return EXIT_OK if args.dry_run else EXIT_UNFINISHED
    done = change(args, lambda: curation.delete_tags(db, args.tags))
    ui(args).emit(
        {"deleted": [_tag_json(c.tag, c.models) for c in done], "dry_run": False},
        [f"deleted {plural(len(done), 'tag')}"],
    )
    return EXIT_OK


def _tag_count(db: DatabaseManager, name: str) -> tuple[str, int]:
    """A tag's name and how many models carry it; ``NotFoundError`` if there is none."""
    wanted = name.strip().lower()
    for tag, count in db.list_tags():
        if tag.name == wanted:
            return tag.name, count
    with db.session_scope() as session:
        raise NotFoundError(f"there is no tag {wanted!r}: {curation.known_tags(session)}.")


def _tag_json(tag: Any, models: int | None) -> dict[str, Any]:
    data = {"name": tag.name, "color": tag.color}
    return data if models is None else {**data, "models": models}


# -- looking: copies, types -----------------------------------------------------------


def cmd_dupes(args: argparse.Namespace) -> int:
    db = open_catalog(args, read_only=True)
    contents = curation.find_duplicates(db)
    lines: list[Line] = []
    for copies in contents:
        holder = f"model {copies.model.name}" if copies.model else "no model holds it"
        lines.append(f"{copies.sha256[:12]}  {copies.count} copies ({holder}):")
        rows: list[list[Line]] = []
        if copies.model:
            rows.append(["model", "", copies.model.path])
        rows += [[r.status, f"#{r.id}", r.path] for r in copies.queued]
        lines += ["  " + line if isinstance(line, str) else line for line in _indented(rows)]
    if contents:
        lines.append(
            "keep one copy: 'modelvault rm MODEL' removes a catalog entry, "
            "'modelvault pending forget ID' a queued row (files are never deleted)"
        )
    else:
        lines = ["no content is catalogued or queued at more than one path"]
    data = {"contents": [_copies_json(c) for c in contents]}
    ui(args).emit(data, lines)
    return EXIT_OK


def _indented(rows: list[list[Line]]) -> list[Line]:
    from rich.text import Text

    lines = table(["", "", ""], rows, right=set())[1:]  # no header row
    return [
        Text("  ").append_text(line) if isinstance(line, Text) else "  " + line for line in lines
    ]


def _copies_json(copies: curation.Copies) -> dict[str, Any]:
    return {
        "sha256": copies.sha256,
        "model": copies.model.to_dict() if copies.model else None,
        "copies": [{"id": r.id, "path": r.path, "status": r.status} for r in copies.queued],
    }


def cmd_types(args: argparse.Namespace) -> int:
    db = open_catalog(args, read_only=True)
    types = curation.known_types(db)
    lines = table(["TYPE", "MODELS"], [[t, str(n)] for t, n in types.items()], right={1})
    ui(args).emit(
        {"types": [{"type": t, "models": n} for t, n in types.items()]},
        lines if types else ["the catalog has no models yet"],
    )
    return EXIT_OK


# -- show: copies and queued rows -----------------------------------------------------


def copy_lines(copies: Sequence[PendingRecord]) -> list[tuple[str, Line]]:
    """``show``'s lines for the other files found to hold a model's content."""
    return [
        ("other copies" if i == 0 else "", f"{r.path} ({r.status}, queued row {r.id})")
        for i, r in enumerate(copies)
    ]


def show_queued(args: argparse.Namespace, db: DatabaseManager, not_found: NotFoundError) -> int:
    """``show`` for a file that is queued, not catalogued: its rows, with their status,
    tags and notes; ``not_found`` (no model matched) if no row matches either."""
    key = args.model.strip()
    rows = curation.find_queued(db, key, absolute=os.path.abspath(os.path.expanduser(key)))
    if not rows:
        raise not_found
    out = ui(args)
    lines: list[Line] = [
        f"no model in the catalog is {key!r}, but {plural(len(rows), 'queued row')} "
        f"{'is' if len(rows) == 1 else 'are'}:"
    ]
    for row in rows:
        lines += ["", *aligned(queued_fields(out, row))]
    out.emit({"model": None, "queued": [r.to_dict() for r in rows]}, lines)
    return EXIT_OK


def queued_fields(out: Any, row: PendingRecord) -> list[tuple[str, Line]]:
    status = f"{row.status} ({plural(row.attempts, 'try', 'tries')})"
    fields: list[tuple[str, Line]] = [
        ("name", row.name),
        ("path", row.path),
        ("queued row", str(row.id)),
        ("status", status),
        ("last error", row.last_error or "-"),
        ("sha256", row.sha256 or "-"),
        ("type", row.type),
        ("tags", out.tag_list(_staged_tags(row.tags), colour_as_text=True)),
    ]
    meta = dict(row.meta)
    for key, label in NOTES:
        if key in meta:
            fields += note_lines(label, meta.pop(key))
    for key, value in sorted(meta.items()):
        fields += note_lines(key, value)
    return fields


def _staged_tags(entries: Sequence[Any]) -> list[TagSpec]:
    specs = []
    for entry in entries:
        try:
            specs.append(TagSpec.parse(entry))
        except ModelVaultError:  # kept as the legacy catalog had it: shown as it is
            specs.append(TagSpec(str(entry)))
    return specs
