"""Legacy values in v3 form: text, counts, times, names, types, JSON, and the
checks that say whether a legacy hash still describes its file.

Pure functions (``file_changed`` alone reads one ``stat``): the importer calls
them row by row; what a value loses on the way is put in the row's
``meta.legacy`` block, which the caller passes in.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from modelvault.catalog.values import file_name
from modelvault.legacy.layout import LegacyLayout, LegacyRow
from modelvault.normalize import (
    MAX_TYPE,
    RELATIVE_PATH,
    is_absolute_path,
    model_type_for_folder,
    normalize_type,
)

MAX_NAME = 512  # the v3 column's width
# Far deeper than any real note, far below what the JSON encoder manages (about
# 990 levels, fewer the deeper the stack it runs in).
MAX_JSON_DEPTH = 200
REPEATED_KEYS = "repeats keys"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MILLISECOND = timedelta(milliseconds=1)


def changed_since_mtime(stored: Any, mtime_ns: int) -> str | None:
    """Layout 1: the file is the one hashed only if its mtime is the stored ``mtime_ns``."""
    if not isinstance(stored, int) or isinstance(stored, bool):
        return f"its legacy mtime_ns {stored!r} is not a time, so nothing shows it is unchanged"
    if stored == mtime_ns:
        return None
    return (
        f"the file was written since it was hashed "
        f"(mtime_ns {stored} in the legacy catalog, {mtime_ns} now)"
    )


def written_after_created(created_ms: Any, mtime_ns: int) -> str | None:
    """Layout 2: the file is the one hashed only if it was last written at or before
    the row's ``created_at`` (compared in whole milliseconds, the column's unit)."""
    created = from_ms(created_ms)
    if created is None:
        return f"its created_at {created_ms!r} is not a time, so nothing shows it is unchanged"
    if mtime_ns // 1_000_000 <= created_ms:
        return None
    written = EPOCH + timedelta(microseconds=mtime_ns // 1000)
    return (
        f"the file was written at {written.isoformat()}, after the legacy app first saw it "
        f"({created.isoformat()}), so its legacy hash may be of other bytes"
    )


def layout1_fields(row: LegacyRow, legacy: dict[str, Any]) -> int | None:
    """Keep the layout-1 columns in meta; returns mtime_ns if it is one."""
    legacy["hash_algo"] = jsonable(row.hash_algo)
    legacy["dir_path"] = jsonable(row.dir_path)
    if row.mtime_ns is not None:
        legacy["mtime_ns"] = jsonable(row.mtime_ns)
    if row.updated_at is not None:
        legacy["updated_at_ms"] = jsonable(row.updated_at)
    mtime = row.mtime_ns
    return mtime if isinstance(mtime, int) and not isinstance(mtime, bool) else None


def text(value: Any) -> str | None:
    """A text column's value as text (a hand-edited file may hold numbers or blobs)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def jsonable(value: Any) -> Any:
    """A raw SQLite value in a form JSON (and PostgreSQL's json type) can hold."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def from_ms(value: Any) -> datetime | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return EPOCH + MILLISECOND * value  # twice as quick as timedelta(milliseconds=)
    except OverflowError:
        return None


def legacy_count(value: Any, key: str, legacy: dict[str, Any]) -> int | None:
    """A legacy size (a count of bytes): the raw value goes to ``legacy[key]`` if it is not one."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    legacy[key] = jsonable(value)
    return None


def storable(text: str) -> str:
    """Text PostgreSQL can store: no file name holds NUL, but a hand-edited file may."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def name_of(value: Any, path: str, legacy: dict[str, Any]) -> str:
    plain = type(value) is str and value and not value.isspace() and len(value) <= MAX_NAME
    if plain and "\x00" not in value:
        return cast(str, value)  # nearly every name: as stored
    raw = text(value)
    name = raw if raw is not None and raw.strip() else file_name(path) or path
    stored = storable(name)[:MAX_NAME]
    if value is not None and stored != value:
        legacy["name"] = jsonable(value)  # blank, unstorable, too long, or not text
    return stored


def model_type_of(value: Any, path: str, legacy: dict[str, Any]) -> str:
    """ComfyUI's model type for the legacy type, which the legacy app took from the
    folder name (``loras`` -> ``lora``); a file directly in a models root got its
    own file name as type, which says nothing of what it is: ``other``."""
    raw = text(value)
    kind = "other" if raw is None else _folder_type(raw)
    # The end of the path is looked at first: the file name is rarely the type.
    tail = path.rstrip().lower()
    if kind != "other" and tail.endswith(kind) and kind == normalize_type(file_name(path)):
        kind = "other"
    stored = kind if len(kind) <= MAX_TYPE else "other"
    if value is not None and stored != value:
        legacy["type"] = jsonable(value)  # a folder name, a file name, not lower case, ...
    return stored


@functools.lru_cache(maxsize=256)
def _folder_type(raw: str) -> str:
    """``model_type_for_folder`` of a stored type (a file holds a handful of them)."""
    return model_type_for_folder(storable(raw))


class _RepeatedKeys(Exception):
    pass


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _RepeatedKeys
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity: PostgreSQL's json refuses them


class _HugeNumber(ValueError):
    pass


def _finite_float(text: str) -> float:
    """A JSON number as a float; one beyond a float's range (``1e400``) would be
    read as infinity and written back as ``Infinity``, which is not JSON."""
    value = float(text)
    if math.isinf(value):
        raise _HugeNumber(text)
    return value


# Built once: json.loads with arguments would build a decoder for every row.
_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_no_repeats, parse_constant=_reject_constant, parse_float=_finite_float
)
_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _json_text_maker() -> Callable[[Any], str]:
    """``json.dumps`` with its defaults, made once: ``json.dumps`` builds its C
    encoder again on every call, which is most of the cost for a small object
    (the importer encodes one per legacy row). The very same text; no check for
    circular references (the values are read from JSON, which has none)."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # an interpreter without the C accelerator
        return json.dumps
    encoder = json.JSONEncoder()
    encode = make(
        None, encoder.default, json.encoder.encode_basestring_ascii, None, ": ", ", ",
        False, False, True,
    )  # fmt: skip
    return lambda value: "".join(encode(value, 0))


json_text = _json_text_maker()


def parse_json(text: str) -> tuple[Any, str | None]:
    """(value, what is wrong with it). Repeated keys keep the last value, as every
    JSON reader does; the caller keeps the text so the others survive too. JSON
    nested deeper than ``MAX_JSON_DEPTH`` is read as not JSON: it cannot be
    written back (the encoder recurses, and the catalog nests meta further)."""
    # Counting brackets is quick and spares nearly every row the closer look.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and too_deep(text):
        return None, f"is nested deeper than {MAX_JSON_DEPTH} levels"
    if text[:1] == "{":  # nearly every note: read without decode()'s two whitespace scans
        try:
            value, end = _STRICT_JSON.raw_decode(text)
        except (_RepeatedKeys, ValueError, RecursionError):
            pass  # told apart below
        else:
            if end == len(text):
                return value, None
    try:
        return _STRICT_JSON.decode(text), None
    except _RepeatedKeys:
        pass  # read again below, each key keeping its last value
    except (ValueError, RecursionError) as exc:
        return None, _not_json(exc)
    try:
        return _JSON.decode(text), REPEATED_KEYS
    except (ValueError, RecursionError) as exc:  # the repeat came before what is wrong
        return None, _not_json(exc)


def _not_json(exc: Exception) -> str:
    if isinstance(exc, _HugeNumber):
        return f"holds the number {exc}, too large for a floating-point number"
    return "is not valid JSON"


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def too_deep(text: str) -> bool:
    """Whether brackets outside strings nest deeper than ``MAX_JSON_DEPTH``."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif mark in "]}":
            depth -= 1
    return False


def file_changed(
    row: LegacyRow, path: str, size: int | None, layout: LegacyLayout
) -> tuple[str | None, int | None]:
    """Why the legacy hash may not describe the file (None when it provably does),
    and the file's mtime (ns) when it is there and provably unchanged, so that
    the model records it and a folder scan finds the file unchanged.

    The legacy app's re-scan stores a file's new size but keeps the old hash
    (LEGACY.md), so the size alone proves nothing. The file is unchanged when
    it has the legacy size and (layout 2) was last written at or before the
    row's ``created_at``, which the app set once, when it first saw the file,
    or (layout 1) its mtime is the stored ``mtime_ns``. A gone file keeps the
    legacy hash: it is all anyone will ever know of it.
    """
    if not path.startswith("/"):  # nearly every path: absolute here, no closer look
        if not is_absolute_path(path):
            return RELATIVE_PATH, None
        if not os.path.isabs(path):
            return None, None  # not a path of this machine (a Windows path here): nothing to read
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None, None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None, None  # no file can have this path
        return f"its file could not be checked ({exc})", None
    why: str | None
    if size is None:
        why = "the legacy catalog has no size for its file, so nothing shows it is unchanged"
    elif stat.st_size != size:
        why = (
            f"the file changed since it was hashed "
            f"(size {size} in the legacy catalog, {stat.st_size} now)"
        )
    elif layout is LegacyLayout.V1:
        why = changed_since_mtime(row.mtime_ns, stat.st_mtime_ns)
    else:
        why = written_after_created(row.created_at, stat.st_mtime_ns)
    return why, (stat.st_mtime_ns if why is None else None)
