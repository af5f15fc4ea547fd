"""Keep the catalog true: walk model folders, stage what is new or changed.

A scan never reads a file's content. It lists the folders (``os.scandir``, one
``stat`` per model file) and compares each file's path and stamp (size, mtime,
inode change time and inode: ``modelvault.file_stamp``) with what the catalog
holds: a model, or a row already staged. A file that matches is left alone (a
record of an older version, with size and mtime only, takes the rest of the
stamp the file has now); a new or changed file is staged in ``pending_import``
(``source`` = ``scan``, type from its folder), and the workers hash it and
settle it by the catalog's rules (``modelvault.catalog.settle.settle_file``): a moved
or renamed file keeps its tags and notes, a file overwritten in place keeps its
model.
Catalogued files that are gone are reported, never deleted; where a copy of
their content was found before (a ``duplicate`` row) and is unchanged since,
the model moves to it at once.

Paths are compared by their identity keys (``modelvault.pathkey``): on Windows,
a file the catalog knows as ``c:\\ComfyUI\\models\\x.ckpt`` is the file the walk
finds at ``C:\\ComfyUI\\models\\x.ckpt`` (nothing is read again). A file whose
name, or a folder's below the scan's root, changed case only is the same file
renamed: its model moves to the new name (``moved``), nothing is read.

Memory stays flat as the tree grows: the walk yields files in the order of
their keys (each folder listed and sorted on its own), and the catalog rows
under the same root are streamed in that same order (the key's index), so the
two are compared like two sorted lists being merged; no table of the whole tree
is held.

The package's modules, in the order a scan uses them: ``sources`` (which
folders), ``walk`` (the files of one folder, in key order), ``stamps`` (what a
file is compared with), ``compare`` (one root's walk against the catalog),
``writer`` (the staging writes, in batches), ``gone`` (the models whose files
were not found), ``report`` (what a scan found).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from modelvault.catalog.records import ModelRecord
from modelvault.database import DatabaseManager
from modelvault.hashing import HashControl
from modelvault.scan.compare import GoneModel, listed_folder_missing, root_keys, scan_root
from modelvault.scan.gone import settle_after_hashing, settle_gone
from modelvault.scan.report import FileChange, ScanReport, shown
from modelvault.scan.sources import (
    ScanRoot,
    checked_roots,
    comfyui_roots,
    parse_extra_model_paths,
    resolve_roots,
)
from modelvault.scan.walk import MODEL_EXTENSIONS, FolderKey, RootWalk
from modelvault.scan.writer import Changes, Progress, ScanWriter

__all__ = [
    "MODEL_EXTENSIONS",
    "FileChange",
    "ScanReport",
    "ScanRoot",
    "checked_roots",
    "comfyui_roots",
    "find_missing",
    "parse_extra_model_paths",
    "resolve_roots",
    "scan_roots",
    "settle_after_hashing",
    "shown",
]


def scan_roots(
    db: DatabaseManager,
    roots: Iterable[ScanRoot | str | os.PathLike[str]],
    *,
    progress: Progress | None = None,
    on_change: Changes | None = None,
    dry_run: bool = False,
    policy: str = "merge",
    control: HashControl | None = None,
) -> ScanReport:
    """Walk ``roots`` and stage every model file that is new or changed.

    Reads no file's content: a file whose path and stamp (size, mtime, inode
    change time, inode) match its model (or its staging row) is left alone.
    Returns what was found; run the workers (``process_pending``,
    ``MigrationManager.start_scan``) to hash what was staged, then
    ``settle_after_hashing`` to count the moves they settled.

    ``on_change`` is called once per file that changed (``FileChange``: new,
    changed, moved, missing, skipped). ``dry_run`` writes nothing: the report
    says what a scan would stage and move. ``policy`` combines the notes of a
    model that moves to a copy of its content (``merge``, ``keep``, ``replace``).

    ``progress(files_seen)`` is called after each batch of writes; ``control``
    (a ``HashControl``) holds the scan there while it is paused, and ends it
    with ``HashCancelled`` once stopped (so does anything ``progress`` raises):
    what was written so far is committed, and a scan run again continues from
    there. Raises ``ScanError`` if a root given by name
    is not a folder, before anything is written; a listed folder (``origin``)
    that is not there is skipped with a note in ``report.skipped``.
    """
    chosen = checked_roots(roots)
    report = ScanReport(roots=[os.path.abspath(r.path) for r in chosen], dry_run=dry_run)
    started = time.monotonic()
    writer = ScanWriter(db, report, progress, on_change, control)
    visited: set[FolderKey] = set()
    keys = root_keys(chosen)
    gone: list[GoneModel] = []
    for root in chosen:
        others = {key: path for key, path in keys.items() if path != root.path}
        walk = RootWalk(report, visited, others, on_change)
        if root.origin is not None and listed_folder_missing(root, walk):
            continue
        gone += scan_root(db, root, walk, writer)
    writer.flush()
    settle_gone(db, gone, writer, policy)
    report.seconds = time.monotonic() - started
    return report


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
