"""Identification in the catalog: what the hasher's read and ``read_header`` find, written
to a model (``base``, ``meta["identify"]``, ``meta["autov3"]``).

- ``HeaderTap``: a ``hashing.ChunkTap`` fed the hasher's chunks; it reads the
  header (and, if asked, computes AutoV3) from them, then ``found(name)``.
- ``found_in_file(path)``: the same for a file catalogued before, from one small read.
- ``apply_found(model, found)``: writes what was found to a model (or any object
  with ``base``, ``type`` and ``meta``), keeping a base the user set.

Who owns ``base``: the user, once they set it (``update_model(base=...)``, the
``base`` and ``edit --base`` commands: ``meta["identify"]["base_set_by"]`` is
``"user"``); a value the catalog held before it was identified (a legacy
catalog's) stays too. Identification fills an empty base, and replaces only the
base it found itself before (``meta["identify"]["base"]``).

Nothing here raises on a hostile file: an exception in identification is one
more ``problem``, and the hash and the catalog entry are unaffected.
"""

from __future__ import annotations

import logging
import ntpath
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from modelvault.identify.hashes import AutoV3
from modelvault.identify.header import HeaderReader, read_header
from modelvault.identify.identify import identify
from modelvault.identify.identity import KINDS, Identity
from modelvault.identify.parsing import Header
from modelvault.identify.sniff import SNIFF_BYTES, settled_by_head

__all__ = [
    "AUTOV3",
    "BASE_SET_BY",
    "FOUND_KEYS",
    "IDENTIFY",
    "USER",
    "WRONG_FOLDER",
    "FoundFields",
    "HeaderTap",
    "apply_found",
    "base_chosen",
    "found_in_file",
    "found_of",
    "user_set_base",
]

log = logging.getLogger(__name__)

IDENTIFY = "identify"  # meta key: Identity.to_meta(), with the keys below
AUTOV3 = "autov3"  # meta key: Civitai's AutoV3 of a safetensors file (MODELVAULT_HASHES)
BASE_SET_BY = "base_set_by"  # in meta.identify: "user" once the user set the base
USER = "user"
WRONG_FOLDER = "wrong_folder"  # in meta.identify: the kind contradicts the model's type

_FAILED = "Identifying the file failed ({error}); its hash and catalog entry are unaffected."


FOUND_KEYS = (IDENTIFY, AUTOV3)


class Identified(Protocol):
    """What ``apply_found`` writes to: a ``Model``, or a row about to become one."""

    base: str | None
    type: str
    meta: dict[str, Any]


@dataclass
class FoundFields:
    """The fields ``apply_found`` writes, for a row written with a statement, not the ORM."""

    base: str | None
    type: str
    meta: dict[str, Any]


class HeaderTap:
    """Reads the header (and AutoV3 where asked) from the chunks the hasher reads.

    AutoV3 is fed by ``take`` too, after the header reader, unless ``beside()``
    was asked for its update: then the hasher runs that in a thread of its own
    (``hash_file_digest(tap=tap, beside=tap.beside())``), beside the SHA-256.

    Without AutoV3 the first chunk is sniffed before any reader is made: a file
    whose first bytes already settle its header (empty, a pickle, no model
    format: ``sniff.settled_by_head``) costs no parser and no copy of its bytes.
    """

    def __init__(self, *, autov3: bool = False) -> None:
        self._want_autov3 = autov3
        self._size: int | None = None  # set by begin: the file was opened
        self._settled: Header | None = None
        self._reader: HeaderReader | None = None
        self._autov3: AutoV3 | None = None
        self._error: str | None = None
        self._autov3_beside = False

    def beside(self) -> Callable[[memoryview], None] | None:
        """AutoV3's update for ``hash_file_digest(beside=...)``; None where not asked."""
        if not self._want_autov3:
            return None
        self._autov3_beside = True
        return self._update_autov3

    def begin(self, size: int) -> None:
        try:
            self._size = size
            if self._want_autov3:  # AutoV3 follows the reader from the first byte
                self._reader = HeaderReader(size)
                self._autov3 = AutoV3(self._reader)
        except Exception as exc:  # never lose the hash to identification
            self._fail(exc)

    def take(self, chunk: memoryview) -> None:
        if self._size is None or self._settled is not None or self._error is not None:
            return
        try:
            if self._reader is None:
                self._settled = self._sniffed(chunk, self._size)
                if self._settled is not None:
                    return
                self._reader = HeaderReader(self._size)
            if self._reader.wants_more:
                self._reader.feed(chunk)
            if self._autov3 is not None and not self._autov3_beside:
                self._autov3.update(chunk)
        except Exception as exc:
            self._fail(exc)

    @staticmethod
    def _sniffed(chunk: memoryview, size: int) -> Header | None:
        """The header where the first chunk's first bytes settle it, else None."""
        head = min(size, SNIFF_BYTES)
        return settled_by_head(bytes(chunk[:head]), size) if len(chunk) >= head else None

    def _update_autov3(self, chunk: memoryview) -> None:
        autov3 = self._autov3  # once: _fail in the other thread may set it to None
        if autov3 is None or self._error is not None:
            return
        try:
            autov3.update(chunk)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        log.warning("identification failed: %s", exc, exc_info=True)
        self._error = _FAILED.format(error=exc)
        self._reader = self._autov3 = None
        self._size = None

    def found(self, file_name: str) -> dict[str, Any]:
        """The meta keys to write: ``identify`` and (if computed) ``autov3``."""
        if self._error is not None or self._size is None:
            problem = self._error or "The file was not read, so it could not be identified."
            return {IDENTIFY: Identity(problem=problem).to_meta()}
        try:
            header = self._settled or (self._reader or HeaderReader(self._size)).result()
            found = found_of(identify(header, file_name=file_name))
            if self._autov3 is not None:
                found[AUTOV3] = self._autov3.hexdigest()
            return found
        except Exception as exc:
            log.warning("identification of %s failed: %s", file_name, exc, exc_info=True)
            return {IDENTIFY: Identity(problem=_FAILED.format(error=exc)).to_meta()}


def found_of(identity: Identity) -> dict[str, Any]:
    return {IDENTIFY: identity.to_meta()}


def found_in_file(path: str) -> dict[str, Any]:
    """What the header of the file at ``path`` says, from one small read.

    ``OSError`` (the file is gone, unreadable, not a regular file) comes as it is;
    whatever is wrong with the content is ``meta.identify.problem``.
    """
    header = read_header(path)
    try:
        return found_of(identify(header, file_name=_base_name(path)))
    except Exception as exc:  # a bug must cost one model's note, not the run
        log.warning("identification of %s failed: %s", path, exc, exc_info=True)
        return {IDENTIFY: Identity(problem=_FAILED.format(error=exc)).to_meta()}


def _base_name(path: str) -> str:
    return ntpath.basename(path) if "\\" in path else posixpath.basename(path)


def user_set_base(meta: Mapping[str, Any]) -> bool:
    """True where the user set the model's base (so identification leaves it)."""
    ident = meta.get(IDENTIFY)
    return isinstance(ident, Mapping) and ident.get(BASE_SET_BY) == USER


def base_chosen(meta: Mapping[str, Any], *, by_user: bool) -> dict[str, Any]:
    """``meta`` noting that the user set the base (``by_user``) or cleared it (so
    identification may fill it again)."""
    ident = meta.get(IDENTIFY)
    ident = dict(ident) if isinstance(ident, Mapping) else {}
    if by_user:
        ident[BASE_SET_BY] = USER
    else:
        ident.pop(BASE_SET_BY, None)  # an empty base is identification's to fill
    result = dict(meta)
    if ident:
        result[IDENTIFY] = ident
    else:
        result.pop(IDENTIFY, None)
    return result


def apply_found(target: Identified, found: Mapping[str, Any], *, new_content: bool = False) -> None:
    """Write ``found`` (``HeaderTap.found``, ``found_in_file``) to ``target``.

    The base: filled where empty, replaced where identification set it before,
    never where the user set it or it came from elsewhere (see the module).
    ``new_content``: the file's content changed (an AutoV3 of the old content goes).
    """
    meta = dict(target.meta)
    old = meta.get(IDENTIFY)
    old = dict(old) if isinstance(old, Mapping) else {}
    ident = dict(found.get(IDENTIFY) or {})
    if old.get(BASE_SET_BY) == USER:
        ident[BASE_SET_BY] = USER
    elif target.base is None or target.base == old.get("base"):
        target.base = ident.get("base")
    wrong = wrong_folder(ident.get("kind"), target.type)
    if wrong:
        ident[WRONG_FOLDER] = wrong
    meta[IDENTIFY] = ident
    if found.get(AUTOV3):
        meta[AUTOV3] = found[AUTOV3]
    elif new_content or AUTOV3 in found:
        meta.pop(AUTOV3, None)
    target.meta = meta


# The catalog types a kind of file is told to belong in ("other" is no folder's).
_FOLDER_TYPES = frozenset(KINDS.values()) - {"other"}


def wrong_folder(kind: object, model_type: str) -> str | None:
    """A sentence where a file of ``kind`` is catalogued (by its folder) as another type."""
    if not isinstance(kind, str) or kind == "unknown" or kind not in KINDS:
        return None
    belongs = KINDS[kind]
    if model_type == belongs or model_type not in _FOLDER_TYPES:
        return None
    article = "an" if kind[0] in "aeiou" else "a"
    return (
        f"The file is {article} {kind.replace('_', ' ')} but is catalogued as {model_type} "
        f"(by its folder): move it to the {belongs} folder, or set its type with "
        "`modelvault edit MODEL --type`."
    )
