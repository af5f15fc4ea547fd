"""Which format a file is in, from its first bytes, and the parser for it.

Never unpickles anything: a pickle or a PyTorch zip is only named as such.
"""

from __future__ import annotations

import struct

from modelvault.identify import gguf, safetensors_format
from modelvault.identify.parsing import (
    EMPTY,
    PICKLE,
    PYTORCH_ZIP,
    UNKNOWN,
    ZIP,
    Header,
    Parser,
    read_bytes,
)

SNIFF_BYTES = 16
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_ENTRY_HEADER = 30  # a zip local file header before its name
_ZIP_NAME_READ = 256  # enough of the first entry's name to see PyTorch's layout


def parse_file(size: int) -> Parser:
    """The parser for a file of ``size`` bytes, chosen by its first bytes."""
    head = (yield from read_bytes(min(size, SNIFF_BYTES))) if size else b""
    settled = settled_by_head(head, size)
    if settled is not None:
        return settled
    if head.startswith(gguf.MAGIC):
        return (yield from gguf.parse(head, size))
    if head.startswith(_ZIP_MAGIC):
        return (yield from _zip(head, size))
    return (yield from safetensors_format.parse(head, size))


def settled_by_head(head: bytes, size: int) -> Header | None:
    """The header of a file of ``size`` bytes whose first ``min(size, SNIFF_BYTES)``
    bytes are ``head``, where those bytes alone settle it (empty, a pickle, no model
    format); None where the format has a header to parse (GGUF, zip, safetensors).

    ``HeaderTap`` asks this first, so that a file in no model format costs no parser."""
    if size == 0:
        return Header(format=EMPTY, size=0, problem="The file is empty (0 bytes).")
    if head.startswith(gguf.MAGIC) or head.startswith(_ZIP_MAGIC):
        return None
    if _is_pickle(head):
        return Header(format=PICKLE, size=size)
    if safetensors_format.looks_like(head):
        return None
    return Header(format=UNKNOWN, size=size, problem=_unknown(head, size))


def _is_pickle(head: bytes) -> bool:
    # Protocol 2 and later start with PROTO n; PyTorch's legacy format is protocol 2.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _zip(head: bytes, size: int) -> Parser:
    """A zip archive; a PyTorch one (``torch.save`` since 1.6) keeps ``<name>/data.pkl``."""
    if size < _ZIP_ENTRY_HEADER:
        return Header(format=ZIP, size=size)
    rest = yield from read_bytes(min(size, _ZIP_ENTRY_HEADER + _ZIP_NAME_READ) - len(head))
    entry = head + rest
    (name_length,) = struct.unpack_from("<H", entry, 26)
    name = entry[_ZIP_ENTRY_HEADER : _ZIP_ENTRY_HEADER + name_length]
    pytorch = name.endswith(b"/data.pkl") or name.endswith(b"/version") or b"/data/" in name
    return Header(format=PYTORCH_ZIP if pytorch else ZIP, size=size)


def _unknown(head: bytes, size: int) -> str:
    if size < 8:
        return f"The file is too short ({size} bytes) to be a model file."
    return (
        f"The file is in no format modelvault reads (it starts with bytes {head[:8].hex(' ')}): "
        "it is not a safetensors or GGUF file."
    )
