"""Keep the catalog true: walk model folders, stage what is new or changed.

A scan never reads a file's content. It lists the folders (``os.scandir``, one
``stat`` per model file) and compares each file's path, size and mtime with what
the catalog holds: a model, or a row already staged. A file that matches is
left alone; a new or changed file is staged in ``pending_import`` (``source`` =
``scan``, type from its folder), and the workers hash it and settle it by the
catalog's rules (``modelvault.catalog.settle_file``): a moved or renamed file
keeps its tags and notes, a file overwritten in place keeps its model.
Catalogued files that are gone are reported, never deleted.

Memory stays flat as the tree grows: the walk yields files in the order of
their path strings (each folder listed and sorted on its own), and the catalog
rows under the same root are streamed in that same order, so the two are
compared like two sorted lists being merged; no table of the whole tree is held.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, bindparam, select, update

from modelvault.catalog import SCAN_MTIME_NS, SCAN_SOURCE, insert_ignoring_duplicates
from modelvault.config import Settings
from modelvault.database import DatabaseManager
from modelvault.db.models import Model, PendingImport, PendingStatus
from modelvault.db.types import utcnow
from modelvault.errors import ScanError
from modelvault.normalize import COMFYUI_FOLDER_TYPES, model_type_for_folder
from modelvault.records import ModelRecord

__all__ = [
    "MODEL_EXTENSIONS",
    "ScanReport",
    "ScanRoot",
    "comfyui_roots",
    "find_missing",
    "parse_extra_model_paths",
    "resolve_roots",
    "scan_roots",
]

# What a model file is called: weights and checkpoints of the formats the
# model managers of this field load. Anything else in a model folder (configs,
# previews, readmes) is not a model.
MODEL_EXTENSIONS = frozenset(
    {".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".pkl"}
)
# Downloads still in progress (browsers, download managers, partial copies).
# Their names end in one of these, so the extension check already leaves them
# out; they are counted so the report can say why a file was not taken.
PARTIAL_SUFFIXES = frozenset(
    {".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".incomplete", ".aria2"}
)
# aria2 keeps "<file>.aria2" beside a file it is still writing.
ARIA2_CONTROL = ".aria2"

# Staging rows written per transaction, and files between two progress calls.
WRITE_BATCH = 500
# Catalog rows fetched per round trip while streaming.
STREAM_BATCH = 1000
# Report at most this many paths per list (the counts are always whole).
REPORT_SAMPLE = 100

PENDING_TABLE = cast(Table, PendingImport.__table__)
# Rows in these statuses wait for a worker already: the scan leaves them alone.
WAITING = frozenset({PendingStatus.PENDING.value, PendingStatus.CLAIMED.value})
# Folder names in extra_model_paths.yaml that are not model folders.
NOT_MODEL_FOLDERS = frozenset({"base_path", "is_default", "custom_nodes", "configs"})

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ScanRoot:
    """A folder to scan; ``type`` for every file under it, or None to take the
    type from each file's first folder below the root (ComfyUI's ``models/``)."""

    path: str
    type: str | None = None


@dataclass
class ScanReport:
    """What a scan found. Lists hold at most ``REPORT_SAMPLE`` paths; counts are whole."""

    roots: list[str] = field(default_factory=list)
    files_seen: int = 0
    unchanged: int = 0
    staged_new: int = 0  # files the catalog has never seen
    staged_changed: int = 0  # catalogued files whose size or mtime changed
    requeued: int = 0  # staging rows in a final status whose file changed
    already_staged: int = 0  # rows waiting for a worker already
    missing: int = 0  # catalogued files that are gone (not deleted)
    missing_paths: list[str] = field(default_factory=list)
    partial_downloads: int = 0
    loops: list[str] = field(default_factory=list)  # symlinked folders leading back up
    skipped: list[str] = field(default_factory=list)  # folders not scanned, and why
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed
    seconds: float = 0.0

    @property
    def staged(self) -> int:
        return self.staged_new + self.staged_changed + self.requeued

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["staged"] = self.staged
        data["seconds"] = round(self.seconds, 3)
        return data

    def note(self, items: list[str], text: str) -> None:
        if len(items) < REPORT_SAMPLE:
            items.append(text)


class FoundFile(NamedTuple):
    path: str
    size: int
    mtime_ns: int
    type: str


# -- which folders ------------------------------------------------------------


def resolve_roots(
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    comfyui: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
) -> list[ScanRoot]:
    """The folders to scan: ``paths``, else a ComfyUI folder's, else
    ``settings.model_roots`` (``MODELVAULT_MODEL_ROOTS``). Each must exist."""
    roots = [ScanRoot(os.fspath(p)) for p in paths]
    if comfyui is not None:
        roots += comfyui_roots(comfyui)
    if not roots:
        settings = settings or Settings.from_env()
        roots = [ScanRoot(p) for p in settings.model_roots]
    if not roots:
        raise ScanError(
            "no folders to scan: give them as arguments, with --comfyui DIR, "
            "or in MODELVAULT_MODEL_ROOTS."
        )
    return checked_roots(roots)


def checked_roots(roots: Iterable[ScanRoot | str | os.PathLike[str]]) -> list[ScanRoot]:
    """``roots`` as ``ScanRoot``s; ``ScanError`` if one is not a folder."""
    chosen = [r if isinstance(r, ScanRoot) else ScanRoot(os.fspath(r)) for r in roots]
    for root in chosen:
        check_folder(root.path)
    return chosen


def check_folder(path: str) -> None:
    if not os.path.isdir(path):
        what = "is not a folder" if os.path.exists(path) else "does not exist"
        raise ScanError(f"the model folder {path} {what}: check the path and scan again.")


def comfyui_roots(folder: str | os.PathLike[str]) -> list[ScanRoot]:
    """ComfyUI's ``models/`` (type from each subfolder's name) and the folders its
    ``extra_model_paths.yaml`` adds, if it has one."""
    base = Path(folder).expanduser()
    models = base / "models"
    if not models.is_dir():
        raise ScanError(
            f"{base} is not a ComfyUI folder: it has no models/ folder; give the folder "
            "that holds ComfyUI's main.py."
        )
    roots = [ScanRoot(str(models.absolute()))]
    extra = base / "extra_model_paths.yaml"
    if extra.is_file():
        roots += parse_extra_model_paths(extra)
    return roots


def parse_extra_model_paths(path: str | os.PathLike[str]) -> list[ScanRoot]:
    """The model folders of a ComfyUI ``extra_model_paths.yaml``.

    Only the shape ComfyUI's example file uses is read, strictly (no YAML
    library): sections ``name:`` at the left margin; inside them ``key: value``
    lines, or ``key: |`` followed by more indented lines, one path each;
    ``#`` comments. ``base_path`` (relative to the file's folder) prefixes the
    relative paths of its section; every other key is a ComfyUI folder name,
    which gives the type of the files under its paths.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScanError(f"cannot read {file}: {exc}; fix or remove the file.") from exc
    sections: list[dict[str, list[str]]] = []
    key: str | None = None  # the key whose "|" block is being read
    block_indent = 0
    for number, raw in enumerate(lines, 1):
        text = _strip_comment(raw).rstrip()
        if not text.strip():
            continue
        indent = len(text) - len(text.lstrip(" "))
        if "\t" in text[: indent + 1]:
            raise _yaml_error(file, number, "indent with spaces, not tabs")
        if key is not None and indent > block_indent:
            sections[-1][key].append(_unquote(text.strip()))
            continue
        key = None
        name, sep, value = text.strip().partition(":")
        if not sep or not name or " " in name.strip():
            raise _yaml_error(file, number, "expected 'name:' or 'key: value'")
        name, value = name.strip(), value.strip()
        if indent == 0:
            if value:
                raise _yaml_error(file, number, "a section line is 'name:' with nothing after")
            sections.append({})
        elif not sections:
            raise _yaml_error(file, number, "an indented line comes before any section")
        elif value == "|":
            key, block_indent = name, indent
            sections[-1][name] = []
        else:
            sections[-1][name] = [_unquote(value)]
    return [root for section in sections for root in _section_roots(file, section)]


def _section_roots(file: Path, section: dict[str, list[str]]) -> list[ScanRoot]:
    base = file.parent
    if section.get("base_path"):
        base = base / Path(section["base_path"][0]).expanduser()
    roots = []
    for name, values in section.items():
        if name in NOT_MODEL_FOLDERS:
            continue
        for value in values:
            folder = (base / Path(value).expanduser()).absolute()
            roots.append(ScanRoot(os.path.normpath(folder), model_type_for_folder(name)))
    return roots


def _strip_comment(line: str) -> str:
    if line.lstrip().startswith("#"):
        return ""
    cut = line.find(" #")
    return line if cut < 0 else line[:cut]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _yaml_error(file: Path, number: int, what: str) -> ScanError:
    return ScanError(
        f"{file} line {number} cannot be read: {what} (the format of ComfyUI's "
        "extra_model_paths.yaml.example); fix the line and scan again."
    )


# -- the walk -----------------------------------------------------------------


@dataclass
class _Frame:
    entries: Iterator[tuple[os.DirEntry[str], bool]]
    type: str | None  # None at a typeless root: each subfolder names its own
    key: tuple[int, int]


@dataclass
class _Walk:
    """One root's walk: what it skipped (so those files are not called missing)."""

    report: ScanReport
    visited: set[tuple[int, int]]
    unseen: list[str] = field(default_factory=list)  # folder prefixes not listed

    def files(self, root: ScanRoot) -> Iterator[FoundFile]:
        """Model files under ``root``, in the order of their path strings.

        Iterative (a stack of folder listings, no recursion limit). A folder is
        listed once, however many symlinks lead to it; one that leads back to a
        folder being walked is a loop and is reported.
        """
        top = os.path.abspath(root.path)
        key = _folder_key(top)
        if key in self.visited:
            self._skip(top, "inside a folder scanned already")
            return
        own_type = os.path.basename(top).lower()
        first = self._listing(top)
        if first is None:
            return
        self.visited.add(key)
        stack = [_Frame(first, root.type, key)]
        here_type = root.type or COMFYUI_FOLDER_TYPES.get(own_type, "other")
        while stack:
            frame = stack[-1]
            item = next(frame.entries, None)
            if item is None:
                stack.pop()
                continue
            entry, is_dir = item
            if not is_dir:
                found = self._file(entry, frame.type or here_type)
                if found is not None:
                    yield found
                continue
            child = self._enter(entry, stack)
            if child is not None:
                child_type = frame.type or model_type_for_folder(entry.name)
                stack.append(_Frame(child[1], child_type, child[0]))

    def _enter(
        self, entry: os.DirEntry[str], stack: list[_Frame]
    ) -> tuple[tuple[int, int], Iterator[tuple[os.DirEntry[str], bool]]] | None:
        try:
            key = _folder_key(entry.path)
        except OSError as exc:
            self._unreadable(entry.path, exc)
            return None
        if key in self.visited:
            if any(frame.key == key for frame in stack):
                self.report.note(self.report.loops, f"{entry.path} leads back to a parent folder")
                self.unseen.append(entry.path + os.sep)
            else:
                self._skip(entry.path, "a second link to a folder scanned already")
            return None
        listing = self._listing(entry.path)
        if listing is None:
            return None
        self.visited.add(key)
        return key, listing

    def _listing(self, folder: str) -> Iterator[tuple[os.DirEntry[str], bool]] | None:
        """The visible entries of a folder, sorted so that paths come out in string order."""
        try:
            with os.scandir(folder) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except OSError as exc:
            self._unreadable(folder, exc)
            return None
        names = {e.name for e in entries}
        kept: list[tuple[str, os.DirEntry[str], bool]] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir and not self._is_model(entry.name, names):
                continue
            # A folder's files sort as "<name>/...": with the separator in the key,
            # the walk's order is exactly the order of the path strings.
            kept.append((entry.name + os.sep if is_dir else entry.name, entry, is_dir))
        kept.sort(key=lambda k: k[0])
        return ((entry, is_dir) for _, entry, is_dir in kept)

    def _is_model(self, name: str, siblings: set[str]) -> bool:
        dot = name.rfind(".")  # (os.path.splitext costs more than the stat on a big tree)
        suffix = name[dot:].lower() if dot > 0 else ""
        if suffix in PARTIAL_SUFFIXES:
            self.report.partial_downloads += 1
            return False
        if suffix not in MODEL_EXTENSIONS:
            return False
        if name + ARIA2_CONTROL in siblings:  # still being downloaded
            self.report.partial_downloads += 1
            return False
        return True

    def _file(self, entry: os.DirEntry[str], kind: str) -> FoundFile | None:
        try:
            st = entry.stat()
        except OSError:  # a broken link or a file removed while we looked
            return None
        return FoundFile(entry.path, st.st_size, st.st_mtime_ns, kind)

    def _unreadable(self, folder: str, exc: OSError) -> None:
        self.report.note(self.report.unreadable, f"{folder}: {exc.strerror or exc}")
        self.unseen.append(folder + os.sep)

    def _skip(self, folder: str, why: str) -> None:
        self.report.note(self.report.skipped, f"{folder}: {why}")
        self.unseen.append(folder + os.sep)

    def gone(self, model: Any) -> None:
        """A catalogued model the walk passed by: missing, unless its folder was not listed."""
        if not any(model.path.startswith(prefix) for prefix in self.unseen):
            self.report.missing += 1
            self.report.note(self.report.missing_paths, model.path)


def _folder_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


# -- comparing with the catalog ------------------------------------------------


class _Sorted:
    """Catalog rows under one folder, streamed in path order, with a look-ahead.

    Each row is a tuple whose first item is the path.
    """

    def __init__(self, rows: Iterator[Any]) -> None:
        self.rows = rows
        self.head: Any = next(rows, None)

    def take(self, path: str | None, passed: Callable[[Any], None] | None = None) -> Any:
        """The row at exactly ``path`` (consumed), or None; the rows that sort
        before it are consumed and handed to ``passed`` (all of them if ``path`` is None)."""
        head = self.head
        while head is not None and (path is None or head[0] < path):
            if passed is not None:
                passed(head)
            head = next(self.rows, None)
        if head is not None and head[0] == path:
            self.head = next(self.rows, None)
            return head
        self.head = head
        return None


def _under(conn: Connection, query: Any, path_column: Any, top: str) -> _Sorted:
    """Rows whose path starts with ``top`` + separator, in code point order on both
    backends (PostgreSQL compares under the "C" collation, like Python and SQLite)."""
    if conn.dialect.name == "postgresql":
        path_column = path_column.collate("C")
    prefix = top.rstrip(os.sep) + os.sep
    after = prefix[:-1] + chr(ord(os.sep) + 1)
    query = (
        query.where(path_column >= prefix, path_column < after)
        .order_by(path_column)
        .execution_options(yield_per=STREAM_BATCH)
    )
    return _Sorted(itertools.chain.from_iterable(conn.execute(query).partitions()))


class _Writer:
    """Staging writes, committed in batches (each batch is whole or absent)."""

    def __init__(self, db: DatabaseManager, report: ScanReport, progress: Progress | None) -> None:
        self.db = db
        self.report = report
        self.progress = progress
        self.new: list[dict[str, Any]] = []
        self.requeue: list[dict[str, Any]] = []
        self.since_progress = 0

    def stage(self, found: FoundFile) -> None:
        stamp = utcnow()
        self.new.append(
            {
                "path": found.path,
                "name": os.path.basename(found.path),
                "type": found.type,
                "size_bytes": found.size,
                "meta": {SCAN_MTIME_NS: found.mtime_ns},
                "tags": [],
                "source": SCAN_SOURCE,
                "status": PendingStatus.PENDING.value,
                "attempts": 0,
                "created_at": stamp,
            }
        )
        self._maybe_flush()

    def again(self, row: Any, found: FoundFile) -> None:
        meta = {**(row.meta or {}), SCAN_MTIME_NS: found.mtime_ns}
        self.requeue.append({"row_id": row.id, "size": found.size, "new_meta": meta})
        self._maybe_flush()

    def tick(self) -> None:
        self.since_progress += 1
        if self.since_progress >= WRITE_BATCH:
            self.flush()

    def _maybe_flush(self) -> None:
        if len(self.new) + len(self.requeue) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.new or self.requeue:
            with self.db.session_scope(immediate=True) as session:
                insert_ignoring_duplicates(session, PENDING_TABLE, self.new)
                if self.requeue:
                    session.connection().execute(_REQUEUE, self.requeue)
            self.new, self.requeue = [], []
        self.since_progress = 0
        if self.progress is not None:
            self.progress(self.report.files_seen)


# A row in a final status whose file changed: back in the queue, counted afresh.
# Never a row a worker holds (its status is not final).
_REQUEUE = (
    update(PENDING_TABLE)
    .where(
        PENDING_TABLE.c.id == bindparam("row_id"),
        PENDING_TABLE.c.status.not_in(sorted(WAITING)),
    )
    .values(
        status=PendingStatus.PENDING.value,
        size_bytes=bindparam("size"),
        meta=bindparam("new_meta"),
        attempts=0,
        last_error=None,
        not_before=None,
        sha256=None,
    )
)


def scan_roots(
    db: DatabaseManager,
    roots: Iterable[ScanRoot | str | os.PathLike[str]],
    *,
    progress: Progress | None = None,
) -> ScanReport:
    """Walk ``roots`` and stage every model file that is new or changed.

    Reads no file's content: a file whose path, size and mtime match its model
    (or its staging row) is left alone. Returns what was found; run the workers
    (``process_pending``, ``MigrationManager.start_scan``) to hash what was
    staged. ``progress(files_seen)`` is called after each batch of writes (it
    may raise to stop the scan: what was written so far is committed, and a
    scan run again continues from there). Raises ``ScanError`` if a root is
    not a folder, before anything is written.
    """
    chosen = checked_roots(roots)
    report = ScanReport(roots=[os.path.abspath(r.path) for r in chosen])
    started = time.monotonic()
    writer = _Writer(db, report, progress)
    visited: set[tuple[int, int]] = set()
    for root in chosen:
        _scan_root(db, root, _Walk(report, visited), writer)
    writer.flush()
    report.seconds = time.monotonic() - started
    return report


def _scan_root(db: DatabaseManager, root: ScanRoot, walk: _Walk, writer: _Writer) -> None:
    report = walk.report
    top = os.path.abspath(root.path)
    with db.translate_errors(), db.engine.connect() as conn:
        models = _under(conn, select(Model.path, Model.size_bytes, Model.mtime_ns), Model.path, top)
        staged_rows = select(
            PendingImport.path,
            PendingImport.id,
            PendingImport.size_bytes,
            PendingImport.meta,
            PendingImport.status,
            Model.sha256.label("model_sha256"),  # the model a duplicate row is a copy of
        ).outerjoin(Model, Model.sha256 == PendingImport.sha256)
        staged = _under(conn, staged_rows, PendingImport.path, top)
        gone = walk.gone
        for found in walk.files(root):
            report.files_seen += 1
            # Staged files that are gone are passed by: the worker marks them missing.
            _compare(found, models.take(found.path, gone), staged.take(found.path), writer)
            writer.tick()
        models.take(None, gone)


def _compare(found: FoundFile, model: Any, row: Any, writer: _Writer) -> None:
    report = writer.report
    if row is not None:
        if row.status in WAITING:
            report.already_staged += 1
        elif (
            row.size_bytes == found.size
            and (row.meta or {}).get(SCAN_MTIME_NS) == found.mtime_ns
            # A copy of content no model holds any more (deleted, or overwritten in
            # place while this copy was being settled) must become a model itself.
            and (row.status != PendingStatus.DUPLICATE.value or row.model_sha256 is not None)
        ):
            report.unchanged += 1
        else:
            report.requeued += 1
            writer.again(row, found)
    elif model is None:
        report.staged_new += 1
        writer.stage(found)
    elif model[1] == found.size and model[2] == found.mtime_ns:  # (path, size, mtime)
        report.unchanged += 1
    else:
        report.staged_changed += 1
        writer.stage(found)


def find_missing(
    db: DatabaseManager,
    roots: Iterable[str | os.PathLike[str]] = (),
    *,
    limit: int | None = None,
) -> list[ModelRecord]:
    """Catalogued models whose file is gone (``models --missing``), by name then path.

    Only models under ``roots`` if any are given. Looks at each file's
    existence (no content is read); nothing is deleted.
    """
    return db.find_models(missing=True, under=roots, limit=limit)
