"""A file's stamp as ``meta`` holds it: a model's ``file_stat`` beside its mtime, and
what a folder scan keeps in a staging row until the file is hashed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelvault.file_stamp import FILE_STAT

# ``pending_import.source`` of the rows a folder scan stages (modelvault.scan).
SCAN_SOURCE = "scan"


# The mtime a folder scan saw, kept in a staging row's meta until the file is hashed
# (``pending_import`` has no mtime column; the worker takes the file's own stat), with
# the rest of its stamp under FILE_STAT as in a model's meta (see modelvault.file_stamp).
# A ``duplicate`` or ``conflict`` row keeps the stamp the file had when it was hashed.
SCAN_MTIME_NS = "scan_mtime_ns"


_SCAN_STAT_KEYS = (SCAN_MTIME_NS, FILE_STAT)


def without_scan_stat(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """A staging row's meta as a model's: the file's stamp is bookkeeping, not a note
    (a model takes the stamp of the file as it was hashed: ``HashedFile.file_stat``)."""
    if SCAN_MTIME_NS in meta or FILE_STAT in meta:
        return {k: v for k, v in meta.items() if k not in _SCAN_STAT_KEYS}
    return meta


def staged_file_stat(meta: Mapping[str, Any]) -> Mapping[str, int] | None:
    """The ``file_stat`` a staging row's meta holds, if any."""
    marks = meta.get(FILE_STAT)
    return marks if isinstance(marks, Mapping) else None


def with_file_stat(meta: Mapping[str, Any], marks: Mapping[str, int] | None) -> dict[str, Any]:
    """``meta`` holding ``marks`` as its ``file_stat`` (none at all if ``marks`` is None:
    an old stamp must not outlive the size and mtime it went with)."""
    meta = dict(meta)
    if marks:
        meta[FILE_STAT] = dict(marks)
    else:
        meta.pop(FILE_STAT, None)
    return meta
