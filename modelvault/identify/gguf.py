"""The GGUF header: magic, version, counts, metadata key/values, then tensor infos.

Layout (little-endian, versions 2 and 3): ``GGUF``, u32 version, u64 tensor
count, u64 key/value count; each key/value is a string key, a u32 type and
a value (arrays: u32 item type, u64 count, items); each tensor info is a
string name, u32 dimension count, u64 dimensions (innermost first), u32
ggml type and u64 offset into the data, which starts at the next multiple of
``general.alignment`` (32 by default) after the infos. Strings are a u64
length and UTF-8 bytes. Long arrays (a tokenizer's vocabulary) are passed
over, not kept.
"""

from __future__ import annotations

import struct
from collections.abc import Generator

from modelvault.identify.parsing import (
    GGUF,
    Header,
    HeaderProblem,
    MetaScalar,
    MetaValue,
    Parser,
    Request,
    Skip,
    TensorInfo,
    read_bytes,
)
from modelvault.identify.safetensors_format import spans_problem

MAGIC = b"GGUF"
MAX_TENSORS = 1_000_000
MAX_KEYS = 100_000
MAX_DIMENSIONS = 8  # ggml has 4
MAX_STRING = 1_000_000  # a key or value string; longer ones are not GGUF metadata
KEPT_ARRAY_ITEMS = 64  # arrays longer than this are passed over, not kept
MAX_ARRAY_ITEMS = 1_000_000  # a tokenizer's vocabulary has a few hundred thousand
DEFAULT_ALIGNMENT = 32

# Scalar value types: (struct format, size); 8 is a string, 9 an array.
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING_TYPE = 8
_ARRAY_TYPE = 9

# ggml tensor types: name, elements per block, bytes per block (ggml.h / gguf-py).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
}


class _Omitted:
    """A value passed over (a long array): not kept in the metadata."""


_OMITTED = _Omitted()


class _Cursor:
    """Reads GGUF's little-endian fields through a parser's requests, counting the bytes."""

    def __init__(self, pos: int) -> None:
        self.pos = pos

    def take(self, n: int) -> Generator[Request, bytes | None, bytes]:
        if not n:
            return b""
        data = yield from read_bytes(n)
        self.pos += n
        return data

    def skip(self, n: int) -> Generator[Request, bytes | None, None]:
        if n:
            yield Skip(n)
            self.pos += n

    def unpack(self, fmt: str, n: int) -> Generator[Request, bytes | None, MetaScalar]:
        data = yield from self.take(n)
        value: MetaScalar = struct.unpack(fmt, data)[0]
        return value

    def count(self) -> Generator[Request, bytes | None, int]:
        value = yield from self.unpack("<Q", 8)
        assert isinstance(value, int)
        return value

    def u32(self) -> Generator[Request, bytes | None, int]:
        value = yield from self.unpack("<I", 4)
        assert isinstance(value, int)
        return value

    def string(self) -> Generator[Request, bytes | None, str]:
        length = yield from self.count()
        if length > MAX_STRING:
            raise _problem(f"holds a string of {length:,} bytes at offset {self.pos - 8:,}")
        data = yield from self.take(length)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _problem(
                f"holds a string that is not UTF-8 at offset {self.pos - length:,}"
            ) from None

    def value(
        self, kind: int, depth: int
    ) -> Generator[Request, bytes | None, MetaValue | _Omitted]:
        if kind in _SCALARS:
            return (yield from self.unpack(*_SCALARS[kind]))
        if kind == _STRING_TYPE:
            return (yield from self.string())
        if kind == _ARRAY_TYPE:
            return (yield from self.array(depth + 1))
        raise _problem(f"holds a value of unknown type {kind} before offset {self.pos:,}")

    def array(self, depth: int) -> Generator[Request, bytes | None, MetaValue | _Omitted]:
        """An array's items where it is short and flat; longer or nested ones are passed over."""
        if depth > 2:
            raise _problem(f"nests arrays more than 2 deep before offset {self.pos:,}")
        kind = yield from self.u32()
        length = yield from self.count()
        if length > MAX_ARRAY_ITEMS:
            raise _problem(f"holds an array of {length:,} items before offset {self.pos:,}")
        keep = length <= KEPT_ARRAY_ITEMS and depth == 1 and kind != _ARRAY_TYPE
        if kind in _SCALARS and not keep:
            yield from self.skip(length * _SCALARS[kind][1])
            return _OMITTED
        items: list[MetaScalar] = []
        for _ in range(length):
            item = yield from self.value(kind, depth)
            if keep and isinstance(item, (str, int, float, bool)):
                items.append(item)
        return items if keep else _OMITTED

    def tensor_info(
        self,
    ) -> Generator[Request, bytes | None, tuple[str, TensorInfo, int, int | None]]:
        name = yield from self.string()
        dimensions = yield from self.u32()
        if dimensions > MAX_DIMENSIONS:
            raise _problem(f"gives tensor {name!r} {dimensions} dimensions")
        sizes = []
        for _ in range(dimensions):
            sizes.append((yield from self.count()))
        kind = yield from self.u32()
        offset = yield from self.count()
        known = GGML_TYPES.get(kind)
        dtype = known[0] if known else f"ggml type {kind}"
        # GGUF lists dimensions innermost first; PyTorch (and safetensors) outermost first.
        info = TensorInfo(dtype, tuple(reversed(sizes)))
        if known is None:
            return name, info, offset, None
        elements = 1
        for n in sizes:
            elements *= n
        return name, info, offset, elements // known[1] * known[2]


def parse(head: bytes, size: int) -> Parser:
    """The parser for a GGUF file whose first bytes (at least 4) are ``head``."""
    if len(head) < 24:
        head += yield from read_bytes(24 - len(head))
    version, tensor_count, key_count = struct.unpack_from("<IQQ", head, 4)
    if version not in (2, 3):
        raise _problem(f"is of GGUF version {version}, which modelvault does not read")
    if tensor_count > MAX_TENSORS or key_count > MAX_KEYS:
        raise _problem(
            f"declares {tensor_count:,} tensors and {key_count:,} keys, far more than any model"
        )
    cursor = _Cursor(len(head))
    metadata: dict[str, MetaValue] = {}
    for _ in range(key_count):
        key = yield from cursor.string()
        kind = yield from cursor.u32()
        value = yield from cursor.value(kind, depth=0)
        if not isinstance(value, _Omitted):
            metadata[key] = value
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    unknown: list[str] = []
    for _ in range(tensor_count):
        name, info, offset, nbytes = yield from cursor.tensor_info()
        tensors[name] = info
        if nbytes is None:
            unknown.append(f"{name!r} ({info.dtype})")
        else:
            spans.append((offset, offset + nbytes, name))
    data_start = _aligned(cursor.pos, metadata.get("general.alignment"))
    problem = None
    if unknown:
        problem = f"gives tensor {unknown[0]} a type modelvault does not know"
    problem = problem or spans_problem(spans, size - data_start, "the tensor data")
    return Header(
        format=GGUF,
        size=size,
        tensors=tensors,
        metadata=metadata,
        data_start=data_start,
        problem=_sentence(problem) if problem else None,
    )


def _aligned(pos: int, alignment: MetaValue | None) -> int:
    step = alignment if isinstance(alignment, int) and alignment > 0 else DEFAULT_ALIGNMENT
    return -(-pos // step) * step


def _problem(what: str) -> HeaderProblem:
    return HeaderProblem(_sentence(what), GGUF)


def _sentence(what: str) -> str:
    return (
        f"The GGUF header {what}: the file is damaged, incomplete, "
        "or written by a tool modelvault does not know."
    )
