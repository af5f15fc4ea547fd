"""A model's fields as a caller gives them, checked and put in normal form, and the
``meta`` keys modelvault itself writes."""

from __future__ import annotations

import json
import ntpath
import posixpath
from collections.abc import Mapping
from typing import Any

from modelvault.db.models import Base, Model
from modelvault.errors import ValidationError
from modelvault.file_stamp import FILE_STAT
from modelvault.identify.catalog import AUTOV3, IDENTIFY
from modelvault.normalize import normalize_sha256, normalize_type

# Top-level ``meta`` keys modelvault itself writes (user keys of these names are
# moved aside on import so neither side is lost).
PREVIOUS_PATHS = "previous_paths"  # where a moved model's file used to be


SUPERSEDED = "superseded"  # notes that gave way when two records of one content met


LEGACY = "legacy"  # what the legacy catalog held that has no column of its own


PREVIEWS = "previews"  # images in the catalog's store: {"sha256", "file", "source"}


PREVIOUS_SHA256 = "previous_sha256"  # content a file held before it was overwritten in place


# FILE_STAT: the file's inode change time and inode, beside mtime_ns (modelvault.file_stamp)
# IDENTIFY, AUTOV3: what the file's header says (modelvault.identify.catalog)
RESERVED_META_KEYS = (
    LEGACY,
    PREVIOUS_PATHS,
    SUPERSEDED,
    PREVIEWS,
    PREVIOUS_SHA256,
    FILE_STAT,
    IDENTIFY,
    AUTOV3,
)


def columns_of(table: type[Base], *, leaving_out: tuple[str, ...]) -> tuple[str, ...]:
    """The column names of an ORM table in their order, but those ``leaving_out``."""
    return tuple(c.name for c in table.__table__.columns if c.name not in leaving_out)


# The columns of ``models`` a caller gives: all but those the catalog keeps itself.
MODEL_FIELDS = columns_of(Model, leaving_out=("path_key", "created_at", "updated_at"))


def file_name(path: str) -> str:
    """The base name of a path written on any OS (legacy paths may be Windows paths)."""
    return ntpath.basename(path) if "\\" in path else posixpath.basename(path)


def model_values(data: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Validate the fields of a model given by a caller and put them in normal form.

    With ``partial`` only the keys present are returned (for updates); otherwise
    ``sha256`` and ``path`` are required and the rest get their defaults.
    """
    unknown = set(data) - set(MODEL_FIELDS) - {"tags"}
    if unknown:
        raise ValidationError(
            f"unknown model field(s) {', '.join(sorted(unknown))}: "
            f"use {', '.join(MODEL_FIELDS)} or tags."
        )
    values: dict[str, Any] = {"sha256": normalize_sha256(data.get("sha256"))}
    values.update(file_values(data, partial=partial))
    if "mtime_ns" in data:
        values["mtime_ns"] = _byte_count("mtime_ns", data["mtime_ns"])
    return with_the_rest(values, data, MODEL_FIELDS)


def with_the_rest(
    values: dict[str, Any], data: Mapping[str, Any], fields: tuple[str, ...]
) -> dict[str, Any]:
    """``values`` (checked) with every other field of ``fields`` that ``data`` gives,
    taken as given: a column with no rule of its own is left to the database's type."""
    for key in fields:
        if key in data and key not in values:
            values[key] = data[key]
    return values


def file_values(data: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """The columns a model and a staging row share, validated and in normal form."""
    values: dict[str, Any] = {}
    path = data.get("path")
    if path is not None or not partial:
        if not isinstance(path, str) or not path.strip():
            raise ValidationError(f"{path!r} is not a path: give the model file's path as text.")
        values["path"] = path
    if "name" in data or not partial:
        name = data.get("name") or (file_name(values["path"]) if "path" in values else None)
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"{name!r} is not a model name: give a non-empty text.")
        values["name"] = name
    if "type" in data or not partial:
        values["type"] = normalize_type(data.get("type"))
    if "size_bytes" in data:
        values["size_bytes"] = _byte_count("size_bytes", data["size_bytes"])
    if "base" in data:
        base = data["base"]
        if base is not None and not isinstance(base, str):
            raise ValidationError(f"base {base!r} is not valid: give a text such as 'SDXL'.")
        values["base"] = base or None
    if "meta" in data or not partial:
        values["meta"] = json_object("meta", data.get("meta") or {})
    return values


MAX_BIGINT = 2**63 - 1


def _byte_count(key: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BIGINT:
        raise ValidationError(
            f"{key} {value!r} is not valid: give a whole number from 0 to {MAX_BIGINT}."
        )
    return value


def json_object(key: str, value: object) -> dict[str, Any]:
    """A mapping that will go into a JSON column, checked now rather than at commit."""
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{key} must be a JSON object (a mapping), not {type(value).__name__}."
        )
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{key} cannot be stored as JSON: {exc}.") from None
    return dict(value)
