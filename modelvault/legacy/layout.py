"""What a legacy catalog looks like: its two layouts, its tables and columns,
the row types read from it, and the checks that recognise a file as one.

``detect_layout`` refuses anything but the legacy app's tables and columns (a
modelvault catalog given by mistake is named as such); ``check_integrity``
refuses a damaged file (``PRAGMA quick_check``); ``keyed_as_made`` tells a file
as the legacy app makes it from a hand-made one (see ``reader``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from modelvault.legacy.file import LEGACY_FILE_NAME, legacy_error

# A read on the legacy file: SQL and its parameters -> every row.
Query = Callable[..., list[Any]]

TABLES = frozenset({"schema_version", "directories", "models", "tags", "model_tags"})
# Tables of a modelvault (v3) catalog, to tell the user they picked the wrong file.
V3_TABLES = frozenset({"models", "tags", "model_tags", "pending_import"})
LAYOUT2_MODEL_COLUMNS = (
    "id",
    "path",
    "name",
    "type",
    "size_bytes",
    "hash_hex",
    "created_at",
    "meta_json",
    "extra_json",
)
LAYOUT1_ONLY_COLUMNS = ("dir_path", "mtime_ns", "hash_algo", "updated_at")
TABLE_COLUMNS = {
    "schema_version": frozenset({"version"}),
    "directories": frozenset({"id", "path", "alias", "parent_id"}),
    "tags": frozenset({"id", "name", "color", "created_at"}),
    "model_tags": frozenset({"model_id", "tag_id"}),
}


class LegacyLayout(enum.IntEnum):
    """The two legacy layouts, by their ``schema_version.version``."""

    V1 = 1  # older: models also has dir_path, mtime_ns, hash_algo, updated_at
    V2 = 2  # current legacy


# The columns of the legacy ``models`` table in each layout.
LEGACY_MODEL_COLUMNS = {
    LegacyLayout.V2: frozenset(LAYOUT2_MODEL_COLUMNS),
    LegacyLayout.V1: frozenset(LAYOUT2_MODEL_COLUMNS + LAYOUT1_ONLY_COLUMNS),
}


class LegacyRow(NamedTuple):
    """One row of the legacy ``models`` table, as stored (not yet in v3 form).

    Values are what SQLite holds, so a hand-edited file may put any type in any
    column (a BLOB is ``bytes``, TEXT that is not UTF-8 ``NotUtf8Text``); the
    importer decides what each value means. The last four fields
    exist in layout 1 only and are None in layout 2.
    """

    id: int
    path: Any
    name: Any
    type: Any
    size_bytes: Any
    hash_hex: Any
    created_at: Any
    meta_json: Any
    extra_json: Any
    dir_path: Any = None
    mtime_ns: Any = None
    hash_algo: Any = None
    updated_at: Any = None


class LegacyTagRow(NamedTuple):
    id: int
    name: Any
    color: Any
    created_at: Any


class LegacyBatch(NamedTuple):
    """Models and ``model_tags`` rows: at most ``LINKS_PER_BATCH`` links unless one
    model has more (its links come whole, with it). Some batches carry only links
    that name no model (see ``LegacyCatalog.batches``). The lists are the
    caller's: it may empty them once read, to free their memory early."""

    rows: list[LegacyRow]
    links: list[tuple[Any, Any]]


class NotUtf8Text(bytes):
    """A TEXT value of the legacy file that is not UTF-8, as its exact bytes (a
    BLOB value is plain ``bytes``)."""


def check_integrity(file: Path, query: Query) -> None:
    """``PRAGMA quick_check``: a damaged file is refused before anything is written."""
    problems = [str(row[0]) for row in query("PRAGMA quick_check(1)")]
    if problems != ["ok"]:
        first = problems[0] if problems else "no answer from the integrity check"
        first = " ".join(first.replace("*** in database main ***", "").split())  # one line
        raise legacy_error(file, f"is damaged ({first})", "restore it from a backup")


def detect_layout(file: Path, query: Query) -> LegacyLayout:
    """The layout of the legacy file; ``LegacyDatabaseError`` for any other file."""
    tables = {
        name
        for (name,) in query(
            "SELECT name FROM sqlite_master "
            "WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
    }
    if tables >= V3_TABLES:
        raise legacy_error(
            file,
            "is a modelvault catalog, not a legacy one",
            f"give the legacy {LEGACY_FILE_NAME} file",
        )
    missing = sorted(TABLES - tables)
    if missing:
        raise legacy_error(
            file,
            f"has no {', '.join(missing)} table{'s' if len(missing) > 1 else ''}, "
            "so it is not a legacy catalog",
            f"give the legacy {LEGACY_FILE_NAME} file",
        )
    extra = sorted(tables - TABLES)
    if extra:
        raise legacy_error(
            file,
            f"has tables a legacy catalog never had ({', '.join(extra)})",
            f"give an unmodified legacy {LEGACY_FILE_NAME} file",
        )
    for table, expected in TABLE_COLUMNS.items():
        _check_columns(file, query, table, expected, None)
    versions = {row[0] for row in query("SELECT version FROM schema_version")}
    if len(versions) != 1:
        state = (
            "no schema version"
            if not versions
            else f"several schema versions ({_listing(versions)})"
        )
        raise legacy_error(file, f"has {state}", "give an unmodified legacy catalog file")
    (version,) = versions
    if version not in (1, 2) or isinstance(version, bool):
        raise legacy_error(
            file,
            f"has schema_version {version!r}, and only legacy layouts 1 and 2 are known",
            "check that it is the legacy catalog, or update modelvault",
        )
    layout = LegacyLayout(version)
    _check_columns(file, query, "models", LEGACY_MODEL_COLUMNS[layout], layout)
    return layout


def _check_columns(
    file: Path, query: Query, table: str, expected: frozenset[str], layout: LegacyLayout | None
) -> None:
    columns = {row[1] for row in query(f"PRAGMA table_info({table})")}
    if columns == expected:
        return
    known = f"layout {int(layout)}'s " if layout is not None else "the legacy "
    details = []
    if expected - columns:
        details.append(f"lacks {_listing(expected - columns)}")
    if columns - expected:
        details.append(f"has unknown {_listing(columns - expected)}")
    raise legacy_error(
        file,
        f"has a {table} table unlike {known}one (it {' and '.join(details)})",
        "give an unmodified legacy catalog file",
    )


def _listing(values: set[Any] | frozenset[Any]) -> str:
    return ", ".join(sorted(str(v) for v in values))


def keyed_as_made(query: Query, link_columns: Sequence[Any]) -> bool:
    """Whether ``models`` is keyed by ``id`` with unique paths and ``model_tags``
    by (model_id, tag_id) with an integer model_id, as the legacy app makes them.
    A hand-made file may differ (ids that are text, links keyed by text, two
    rows with one path, no keys at all): it is read in id order, where each of
    these reads right. ``link_columns`` is ``PRAGMA table_info(model_tags)``."""
    models = query("PRAGMA table_info(models)")
    model_key = [(name, str(kind).upper()) for _, name, kind, _, _, pk in models if pk]
    link_key = sorted((pk, name) for _, name, _, _, _, pk in link_columns if pk)
    return (
        model_key == [("id", "INTEGER")]
        and link_key == [(1, "model_id"), (2, "tag_id")]
        and link_model_affinity(link_columns) == "INTEGER"  # '5' is stored as 5
        and _path_is_unique(query)
    )


def link_model_affinity(link_columns: Sequence[Any]) -> str:
    """The affinity of ``model_tags.model_id`` (see ``_affinity``)."""
    kind = next(kind for _, name, kind, *_ in link_columns if name == "model_id")
    return _affinity(str(kind))


def _path_is_unique(query: Query) -> bool:
    """Whether an index keeps every path unique (not a partial one)."""
    for _, name, unique, _origin, partial in query("PRAGMA index_list(models)"):
        info = query(f"PRAGMA index_info({_quoted(name)})")
        if unique and not partial and [row[2] for row in info] == ["path"]:
            return True
    return False


def _affinity(declared: str) -> str:
    """The affinity SQLite gives a column of this declared type (its rules, in order)."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if any(word in kind for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in kind or not kind:
        return "BLOB"
    if any(word in kind for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Every read of links by model_id: the links whose model_id meets ``where``, in
# key order; or the window's end, the model_id LINKS_PER_BATCH links on (OFFSET).
