"""The hashes Civitai and image metadata know a model by, beside modelvault's SHA-256.

- AutoV2: the first 10 hex digits of the file's SHA-256 (``autov2``).
- AutoV3: the SHA-256 of a safetensors file's bytes after its header, i.e. of
  its tensor data alone, so it survives tools that rewrite the header's
  metadata in place (sd-webui-additional-networks' "addnet" hash; A1111 writes
  its first 12 hex digits as a LoRA's hash in image metadata). ``AutoV3`` is
  computed from the very chunks the hasher reads, beside the SHA-256.

How the two digests share two cores: ``hashlib`` releases the GIL while it
hashes more than 2 KiB, so two threads hashing 2 MiB chunks run in parallel.
The worker feeds the header reader in the thread that holds the chunk
(``identify.catalog.HeaderTap.take``) and hands the chunk to AutoV3 in a thread
of its own (``HeaderTap.beside``, ``hashing.hash_file_digest(beside=...)``),
which takes the chunks in file order. The header reader is fed first (it wants
only the first chunk or two), so AutoV3 knows where the tensor data starts by
the time it takes that chunk.
"""

from __future__ import annotations

import hashlib
import re

from modelvault.errors import ValidationError
from modelvault.identify.header import HeaderReader
from modelvault.identify.parsing import SAFETENSORS

__all__ = ["AUTOV2_LENGTH", "AUTOV3_SHORT_LENGTH", "AutoV3", "autov2"]

AUTOV2_LENGTH = 10
AUTOV3_SHORT_LENGTH = 12  # what A1111 writes for a LoRA in image metadata
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def autov2(sha256: str) -> str:
    """The AutoV2 hash (upper-case, as Civitai shows it) of a file whose SHA-256 is ``sha256``."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValidationError(f"{sha256!r} is not a SHA-256 (64 hex digits).")
    return sha256[:AUTOV2_LENGTH].upper()


class AutoV3:
    """The AutoV3 hash of a file, fed the same chunks as ``reader``, right after it.

    Call ``update(chunk)`` for every chunk of the file, in order, each after
    ``reader.feed(chunk)`` (or after the reader stopped wanting bytes). Bytes
    before the end of the header are not hashed; the rest are.
    ``hexdigest()`` is None where the file is not a safetensors file whose
    header could be read whole (no tensor data to speak of).
    """

    def __init__(self, reader: HeaderReader) -> None:
        self._reader = reader
        self._sha = hashlib.sha256()
        self._offset = 0  # file offset of the next chunk

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        start = self._reader.data_start
        end = self._offset + len(chunk)
        if start is not None and end > start:
            skip = max(0, start - self._offset)
            self._sha.update(memoryview(chunk)[skip:] if skip else chunk)
        self._offset = end

    def hexdigest(self) -> str | None:
        if self._reader.wants_more:
            return None
        header = self._reader.result()
        if header.format != SAFETENSORS or header.data_start is None:
            return None
        return self._sha.hexdigest()
