"""The whole catalog as one file, and back (``exchange_import``).

An export holds every tag (name, colour, when made), every model (its fields,
notes and ``meta`` as they are, its tags by name, both timestamps to the
microsecond), every queued row, the deleted log (``deleted_records``) and the
list of the image store's files (``<sha256>.<ext>``). It is written in one of
two layouts, both UTF-8:

- ``json``: one JSON document, ``{"format", "version", "tags": [...],
  "models": [...], "queued": [...], "deleted": [...], "images": [...],
  "end": {counts}}``, for small catalogs and for reading;
- ``lines`` (JSON Lines): a header line ``{"format", "version", "layout"}``,
  then one record a line (``{"tag": {...}}``, ``{"model": {...}}``,
  ``{"queued": {...}}``, ``{"deleted": {...}}``, ``{"image": {...}}``) and an
  ``{"end": {counts}}`` line, for catalogs of any size: read and written as a
  stream, so memory stays flat however many models there are.

The order is fixed (tags by name, models by SHA-256, queued and deleted rows
in the order they were made, images by name) and keys are sorted, so a catalog
exported, imported into an empty catalog and exported again gives the same
bytes, on SQLite and PostgreSQL alike.

The export is read in one transaction (a snapshot: workers may run meanwhile)
through a server-side cursor (``yield_per``), and written to a temporary file
beside the target that takes its name only once whole: a failed export (a full
disk) leaves nothing behind, and a file that is there and is not an export of
ours is never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, select

from modelvault.catalog.staging import PENDING_FIELDS
from modelvault.database import DatabaseManager
from modelvault.db.models import DeletedRecord, Model, PendingImport, PendingStatus, Tag, model_tags
from modelvault.errors import ExchangeError
from modelvault.images import is_stored_name
from modelvault.queue.statements import MODEL_COLUMNS

FORMAT = "modelvault-catalog"
VERSION = 1
LAYOUTS = ("json", "lines")
LINES_SUFFIXES = (".jsonl", ".ndjson")
# Rows fetched per round trip from the server-side cursor.
STREAM_BATCH = 1000
# The sections of an export, in their order: (record kind, section of a JSON document).
SECTIONS = (
    ("tag", "tags"),
    ("model", "models"),
    ("queued", "queued"),
    ("deleted", "deleted"),
    ("image", "images"),
)
# The columns an export carries: a model's without its path key (derived from the
# path again on import), a staging row's as add_pending_import takes them, with
# its retry time. Records are written with sorted keys: the order here is free.
MODEL_FIELDS = tuple(name for name in MODEL_COLUMNS if name != "path_key")
QUEUED_FIELDS = (*PENDING_FIELDS, "not_before")
DELETED_FIELDS = ("kind", "sha256", "path", "name", "deleted_at", "record")
# A few bytes tell an export of ours from anything else before it is overwritten.
HEAD_BYTES = 4096

Progress = Callable[[str, int], None]  # (section, records written so far in it)


@dataclass
class ExportReport:
    path: str
    layout: str
    tags: int = 0
    models: int = 0
    queued: int = 0
    deleted: int = 0
    images: int = 0
    bytes_written: int = 0
    images_copied: int = 0
    images_folder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def counts(self) -> dict[str, int]:
        return {section: getattr(self, section) for _, section in SECTIONS}


def layout_for(path: str | os.PathLike[str], layout: str | None) -> str:
    """The layout asked for, else by the file's suffix: ``.jsonl`` or ``.ndjson``
    are JSON Lines, anything else one JSON document."""
    if layout is not None:
        if layout not in LAYOUTS:
            raise ExchangeError(f"{layout!r} is not a layout of an export: use json or lines.")
        return layout
    return "lines" if Path(path).suffix.lower() in LINES_SUFFIXES else "json"


def dumps(value: Any) -> str:
    """One record as the export writes it: keys sorted, no spaces, text as it is."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def time_text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="microseconds")


# -- reading the catalog ----------------------------------------------------------


def catalog_records(conn: Connection, images: Path | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record of the catalog as ``(kind, record)``, in the export's order."""
    yield from (("tag", tag) for tag in _tags(conn))
    yield from (("model", model) for model in _models(conn))
    yield from (("queued", row) for row in _queued(conn))
    yield from (("deleted", row) for row in _deleted(conn))
    yield from (("image", image) for image in store_listing(images))


def _streamed(conn: Connection, query: Any) -> Iterator[Any]:
    result = conn.execute(query.execution_options(yield_per=STREAM_BATCH))
    for page in result.partitions():
        yield from page


def _tags(conn: Connection) -> list[dict[str, Any]]:
    # Few enough to sort here: PostgreSQL's collation would order names as no other backend.
    rows = conn.execute(select(Tag.name, Tag.color, Tag.created_at)).all()
    return sorted(
        ({"name": n, "color": c, "created_at": time_text(t)} for n, c, t in rows),
        key=lambda tag: tag["name"],
    )


def _models(conn: Connection) -> Iterator[dict[str, Any]]:
    columns = [getattr(Model, name) for name in MODEL_FIELDS]
    result = conn.execute(
        select(*columns).order_by(Model.sha256).execution_options(yield_per=STREAM_BATCH)
    )
    for page in result.partitions():
        tags = _tags_of(conn, [row.sha256 for row in page])
        for row in page:
            record = _timed(dict(row._mapping), ("created_at", "updated_at"))
            record["tags"] = sorted(tags.get(row.sha256, ()))
            yield record


def _tags_of(conn: Connection, shas: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    query = (
        select(model_tags.c.model_sha256, Tag.name)
        .join(Tag, Tag.id == model_tags.c.tag_id)
        .where(model_tags.c.model_sha256.in_(shas))
    )
    for sha, name in conn.execute(query):
        found.setdefault(sha, []).append(name)
    return found


def _queued(conn: Connection) -> Iterator[dict[str, Any]]:
    columns = [getattr(PendingImport, name) for name in QUEUED_FIELDS]
    for row in _streamed(conn, select(*columns).order_by(PendingImport.id)):
        record = _timed(dict(row._mapping), ("created_at", "not_before"))
        if record["status"] == PendingStatus.CLAIMED.value:
            # A worker's claim does not travel: the row waits to be hashed again.
            record["status"] = PendingStatus.PENDING.value
        yield record


def _deleted(conn: Connection) -> Iterator[dict[str, Any]]:
    columns = [getattr(DeletedRecord, name) for name in DELETED_FIELDS]
    for row in _streamed(conn, select(*columns).order_by(DeletedRecord.id)):
        yield _timed(dict(row._mapping), ("deleted_at",))


def _timed(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    for key in keys:
        record[key] = time_text(record[key])
    return record


def store_listing(folder: Path | None) -> list[dict[str, str]]:
    """The image store's files, by name: ``{"file", "sha256"}`` (the name says the content)."""
    if folder is None or not folder.is_dir():
        return []
    names = sorted(entry.name for entry in os.scandir(folder) if is_stored_name(entry.name))
    return [{"file": name, "sha256": name.partition(".")[0]} for name in names]


@contextmanager
def snapshot(db: DatabaseManager) -> Iterator[Connection]:
    """One read transaction that sees the catalog as it was when it began (SQLite: a
    read transaction in WAL mode; PostgreSQL: REPEATABLE READ), whatever workers commit."""
    with db.translate_errors(), db.engine.connect() as conn:
        if not db.is_sqlite:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


# -- writing the file --------------------------------------------------------------


def export_catalog(
    db: DatabaseManager,
    target: str | os.PathLike[str],
    *,
    layout: str | None = None,
    with_images: bool = False,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the whole catalog to ``target`` (see the module docstring).

    ``target`` may exist only as an earlier export (it is then replaced whole);
    anything else there is refused with ``ExchangeError``, untouched.
    ``with_images`` copies the store's files into the folder ``<target
    without its suffix>.images`` beside it.
    """
    path = Path(target).expanduser().absolute()
    chosen = layout_for(path, layout)
    refuse_unless_ours(path)
    report = ExportReport(str(path), chosen)
    images = db.images_dir
    with replacing(path) as out, snapshot(db) as conn:
        write = _write_lines if chosen == "lines" else _write_document
        write(out, catalog_records(conn, images), report, progress or _ignore)
        report.bytes_written = out.tell()
    if with_images:
        copy_images(images, images_folder(path), report)
    return report


def images_folder(export: Path) -> Path:
    return export.with_name(export.stem + ".images")


def _write_lines(
    out: IO[str],
    records: Iterator[tuple[str, dict[str, Any]]],
    report: ExportReport,
    progress: Progress,
) -> None:
    out.write(dumps({"format": FORMAT, "version": VERSION, "layout": "lines"}) + "\n")
    sections = dict(SECTIONS)
    for kind, record in records:
        out.write(dumps({kind: record}) + "\n")
        _count(report, sections[kind], progress)
    out.write(dumps({"end": report.counts()}) + "\n")


def _write_document(
    out: IO[str],
    records: Iterator[tuple[str, dict[str, Any]]],
    report: ExportReport,
    progress: Progress,
) -> None:
    head = dumps({"format": FORMAT, "version": VERSION})
    out.write(head[:-1])
    sections = dict(SECTIONS)
    current: str | None = None
    for kind, record in records:
        section = sections[kind]
        if section != current:
            _open_sections(out, current, section)
            current = section
        elif getattr(report, section):
            out.write(",")
        out.write("\n" + dumps(record))
        _count(report, section, progress)
    _open_sections(out, current, None)
    out.write(f',"end":{dumps(report.counts())}}}\n')


def _open_sections(out: IO[str], current: str | None, upto: str | None) -> None:
    """Close the section being written and open every one up to ``upto`` (an empty
    section is written as ``[]``), so each section is there in its place."""
    names = [section for _, section in SECTIONS]
    start = 0 if current is None else names.index(current) + 1
    if current is not None:
        out.write("\n]")
    stop = len(names) if upto is None else names.index(upto)
    for name in names[start:stop]:
        out.write(f',"{name}":[]')
    if upto is not None:
        out.write(f',"{upto}":[')


def _count(report: ExportReport, section: str, progress: Progress) -> None:
    done = getattr(report, section) + 1
    setattr(report, section, done)
    if done % STREAM_BATCH == 0:
        progress(section, done)


def _ignore(_section: str, _done: int) -> None:
    pass


def is_our_export(path: Path) -> bool:
    """Whether the file at ``path`` begins as an export of ours does."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEAD_BYTES)
    except OSError:
        return False
    return head.startswith(b'{"format":"' + FORMAT.encode() + b'"')


def refuse_unless_ours(path: Path) -> None:
    """A target that exists must be an earlier export (a regular file of ours)."""
    if not path.parent.is_dir():
        raise ExchangeError(
            f"the folder of {path} does not exist: create it first, or export elsewhere."
        )
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_file() or not is_our_export(path):
        raise ExchangeError(
            f"{path} exists and is not a modelvault export: it is left as it is; "
            "give a new file name (or remove that file yourself)."
        )


@contextmanager
def replacing(path: Path) -> Iterator[IO[str]]:
    """A text file that becomes ``path`` only once written whole, flushed and synced;
    on any error it is removed and ``path`` stays as it was."""
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise _write_failed(path, exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        _remove(temp)
        raise _write_failed(path, exc) from exc
    except BaseException:
        _remove(temp)
        raise


def _write_failed(path: Path, exc: OSError) -> ExchangeError:
    return ExchangeError(
        f"cannot write {path} ({exc.strerror or exc}): nothing was written; free some space "
        "or choose another place."
    )


def _remove(temp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(temp)


def copy_images(store: Path | None, folder: Path, report: ExportReport) -> None:
    """The store's files copied into ``folder`` (ours: made here, or an earlier copy)."""
    listing = store_listing(store)
    report.images_folder = str(folder)
    if store is None or not listing:
        return
    if folder.exists() and not _holds_only_images(folder):
        raise ExchangeError(
            f"{folder} exists and holds files that are not stored images: the images "
            "were not copied; remove it or export under another name."
        )
    try:
        folder.mkdir(exist_ok=True)
        for image in listing:
            target = folder / image["file"]
            if not target.exists():
                shutil.copyfile(store / image["file"], target)
                report.images_copied += 1
    except OSError as exc:
        raise ExchangeError(
            f"cannot copy the preview images into {folder} ({exc.strerror or exc}): the "
            "export itself is whole; free some space and export again with --with-images."
        ) from exc


def _holds_only_images(folder: Path) -> bool:
    return folder.is_dir() and all(is_stored_name(entry.name) for entry in os.scandir(folder))


def records_in(values: Mapping[str, Any], section: str) -> list[Any]:
    found = values.get(section)
    return found if isinstance(found, list) else []
