"""Rows found by the identity key of their path (``modelvault.pathkey``), in SQL.

A row's key is its ``path_key`` where it has one (a Windows path), else its
``path``: a POSIX path is its own key, and nothing more is stored for it (a
catalog of POSIX paths writes no key and indexes only NULLs, appended in order).
Which column holds a key follows from the path alone (``pathkey.is_own_key``),
so each look-up below reads one column through its index:

- ``same_file(Model, path)``: the row of the file at ``path``, however spelt;
- ``keys_under(Model, folder)``: the rows under a folder (in any spelling);
- ``key_range(Model, folder, dialect)``: the same, with the column to order by,
  in code point order on both backends (the scan merges it with its walk);
- ``same_key(a, b)``: two rows (of two tables, or aliases) of one file.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.engine import Dialect

from modelvault.pathkey import is_own_key, key_prefix, path_key

__all__ = ["key_range", "keys_under", "same_file", "same_key"]


def same_file(entity: Any, path: str) -> ColumnElement[bool]:
    """``entity``'s rows whose key is that of ``path``."""
    if is_own_key(path):
        return entity.path == path  # type: ignore[no-any-return]
    return entity.path_key == path_key(path)  # type: ignore[no-any-return]


def key_range(entity: Any, folder: str, dialect: Dialect) -> tuple[Any, ColumnElement[bool]]:
    """The column that holds the keys under ``folder``, made to sort as code points,
    and the condition that keeps the rows under it: a range of that column's index."""
    prefix = key_prefix(folder)
    after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    if is_own_key(folder):
        column = entity.path
        if dialect.name == "postgresql":  # path sorts by the database's collation
            column = column.collate("C")
    else:
        column = entity.path_key  # COLLATE "C" on PostgreSQL (db.models.KeyText)
    return column, and_(column >= prefix, column < after)


def keys_under(entity: Any, folder: str) -> ColumnElement[bool]:
    """``entity``'s rows whose path lies under ``folder``, in any spelling of it."""
    prefix = key_prefix(folder)
    if is_own_key(folder):  # LIKE 'prefix%': whatever the database's collation
        return entity.path.startswith(prefix, autoescape=True)  # type: ignore[no-any-return]
    after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(entity.path_key >= prefix, entity.path_key < after)


def same_key(a: Any, b: Any) -> ColumnElement[bool]:
    """Two rows of one file: the same path, or the same stored key (a row without
    one is a POSIX path, never the key of a Windows path)."""
    return or_(a.path == b.path, a.path_key == b.path_key)
