"""The safetensors header: an 8-byte little-endian length, then that many bytes of JSON.

The JSON maps each tensor's name to ``{"dtype", "shape", "data_offsets"}``
(offsets relative to the first byte after the header) and may hold
``__metadata__``, a map of strings. Everything a hostile file could use to
make a reader hang or allocate without bound is checked before it is used:
the declared length against the file and ``MAX_HEADER_BYTES`` before a byte
of the JSON is read, the JSON's size in values and its nesting before it is
parsed, then every tensor's dtype, shape and offsets.
"""

from __future__ import annotations

import json
import math
import operator
import re
import struct
from collections.abc import Mapping
from itertools import accumulate, chain, repeat
from typing import Any, TypeGuard

from modelvault.identify.parsing import (
    MAX_HEADER_BYTES,
    SAFETENSORS,
    Header,
    MetaValue,
    Parser,
    TensorInfo,
    TensorTable,
    read_bytes,
)

# Bits per element of every dtype the safetensors format defines.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "I64": 64,
    "U64": 64,
    "F64": 64,
}

# A valid header nests 3 deep (the header, a tensor, its shape): a little room, no more.
MAX_DEPTH = 4
# JSON values (counted by their separators) a header may hold: ~70,000 tensors, a
# hundred times a big checkpoint; bounds what parsing can allocate.
MAX_JSON_VALUES = 1_000_000
MAX_DIMENSIONS = 8
# Headers up to this size are parsed as they are (what parsing them can allocate is
# small); larger ones are scanned for their size in values and their depth first.
PRESCAN_ABOVE = 1024 * 1024

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = re.compile(rb"[^\[\]{}]+")
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_LENGTH = struct.Struct("<Q")
_ADVICE = "the file is damaged, incomplete, or written by a tool modelvault does not know"


def looks_like(head: bytes) -> bool:
    """The first bytes of a safetensors file: a length, then JSON (an object, if all is well)."""
    return len(head) >= 9 and head[8:9] in (b"{", b"[", b'"', b" ")


def parse(head: bytes, size: int) -> Parser:
    """The parser for a safetensors file whose first bytes are ``head``."""
    (length,) = _LENGTH.unpack_from(head)
    if length > MAX_HEADER_BYTES:
        return _bad(
            size,
            f"declares a header of {length:,} bytes, "
            f"more than the {MAX_HEADER_BYTES:,} safetensors allows",
            "it is damaged or not a safetensors file",
        )
    if 8 + length > size:
        return _bad(
            size,
            f"declares a header of {length:,} bytes, but the file has only {size:,}",
            "it is damaged or incomplete; download it again",
        )
    raw = head[8 : 8 + length]
    if len(raw) < length:
        raw += yield from read_bytes(length - len(raw))
    return check(raw, size)


def check(raw: bytes, size: int) -> Header:
    """The Header a safetensors file of ``size`` bytes whose header JSON is ``raw`` gives."""
    data_start = 8 + len(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _bad(
            size, f"is not UTF-8 (byte {exc.start + 8} is 0x{raw[exc.start]:02x})", "it is damaged"
        )
    too_big = _too_big(raw) if len(raw) > PRESCAN_ABOVE else None
    if too_big:
        return _bad(size, too_big, "it is damaged or not a safetensors file")
    try:
        document = json.loads(text)
    except RecursionError:
        return _bad(size, "is nested too deeply to be JSON anyone reads", "it is damaged")
    except ValueError as exc:
        return _bad(size, f"is not valid JSON ({exc})", "it is damaged")
    if not isinstance(document, dict):
        return _bad(size, f"is a JSON {type(document).__name__}, not an object", "it is damaged")
    metadata, problem = _metadata(document.pop("__metadata__", {}))
    tensors, tensor_problem = _tensors(document, size - data_start)
    problem = problem or tensor_problem
    return Header(
        format=SAFETENSORS,
        size=size,
        tensors=tensors,
        metadata=metadata,
        data_start=data_start,
        problem=_sentence(problem, _ADVICE) if problem else None,
    )


def _too_big(raw: bytes) -> str | None:
    """Why the JSON is too large or deep to parse, seen without parsing it (C-speed scans)."""
    bare = _STRING.sub(b'""', raw)  # strings may hold anything, JSON included
    values = bare.count(b",") + bare.count(b":") + bare.count(b"[") + bare.count(b"{")
    if values > MAX_JSON_VALUES:
        return f"holds more than {MAX_JSON_VALUES:,} JSON values"
    steps = _BRACKETS.sub(b"", bare).translate(_DEPTH_STEP)
    deepest = max(accumulate(1 if step == 1 else -1 for step in steps), default=0)
    if deepest > MAX_DEPTH:
        return (
            f"is nested {deepest} levels deep, more than the {MAX_DEPTH} a safetensors header has"
        )
    return None


def _metadata(value: object) -> tuple[dict[str, MetaValue], str | None]:
    if not isinstance(value, dict):
        return {}, f"has a __metadata__ that is a JSON {type(value).__name__}, not an object"
    kept: dict[str, MetaValue] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            name = type(item).__name__
            return kept, f"has a __metadata__ value that is not a string ({key!r} is a {name})"
        kept[key] = item
    return kept, None


Checked = tuple[Mapping[str, TensorInfo], str | None]  # the tensors, what is wrong


def _tensors(document: Mapping[str, object], data_size: int) -> Checked:
    """The tensors, and the first thing wrong with one of them or with where their bytes lie.

    A checkpoint has thousands of tensors: where all are well-formed (nearly
    always) ``_all_well_formed`` checks them at once; else each well-formed one
    takes the quick path below, and the first that does not is looked at again
    by ``_tensor`` to say what is wrong with it."""
    well_formed = _all_well_formed(document, data_size)
    if well_formed is not None:
        return well_formed
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    problem: str | None = None
    for name, entry in document.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]  # type: ignore[index]
            bits = DTYPE_BITS[dtype]
            quick = (
                type(shape) is list
                and len(shape) <= MAX_DIMENSIONS
                and type(begin) is int
                and type(end) is int
                and 0 <= begin <= end
                and all(type(n) is int and n >= 0 for n in shape)
                and math.prod(shape) * bits == (end - begin) * 8
            )
        except (TypeError, KeyError, ValueError):
            quick = False
        if quick:
            tensors[name] = TensorInfo(dtype, tuple(shape))
            spans.append((begin, end, name))
            continue
        info, span, wrong = _tensor(name, entry)
        if info is not None:
            tensors[name] = info
        if span is not None:
            spans.append(span)
        problem = problem or wrong
    return tensors, problem or _spans_problem(spans, data_size)


_FIELDS = operator.itemgetter("dtype", "shape", "data_offsets")


def _all_well_formed(document: Mapping[str, Any], data_size: int) -> Checked | None:
    """``_tensors``'s answer where every tensor is well-formed, else None.

    The same checks as ``_tensors``'s quick path (and ``_spans_problem``'s where
    the tensors' bytes follow one another), made on all tensors at once by
    ``map`` over C functions, so no Python code runs per tensor; and no object is
    made per tensor either (a ``TensorTable``)."""
    names = list(document)
    try:
        dtypes, shapes, offsets = zip(*map(_FIELDS, document.values()), strict=True)
        bits = list(map(DTYPE_BITS.__getitem__, dtypes))
    except (TypeError, KeyError, ValueError):  # an entry that is no object, lacks a field...
        return None if names else (TensorTable({}, {}), None)
    if set(map(type, shapes)) != {list} or set(map(type, offsets)) != {list}:
        return None
    if max(map(len, shapes)) > MAX_DIMENSIONS or set(map(len, offsets)) != {2}:
        return None
    flat = list(chain.from_iterable(offsets))
    numbers = list(chain(chain.from_iterable(shapes), flat))
    if set(map(type, numbers)) != {int} or min(numbers) < 0:
        return None
    begins, ends = flat[0::2], flat[1::2]
    lengths = list(map(operator.sub, ends, begins))
    needed = map(operator.mul, map(math.prod, shapes), bits)
    have = map(operator.mul, lengths, repeat(8))
    if min(lengths) < 0 or not all(map(operator.eq, needed, have)):
        return None
    table = TensorTable(
        dict(zip(names, dtypes, strict=True)), dict(zip(names, shapes, strict=True))
    )
    # In file order, each tensor's bytes begin where the last one's end (or after): no overlap.
    if flat != sorted(flat) and _overlap(begins, ends):
        return table, _spans_problem(list(zip(begins, ends, names, strict=True)), data_size)
    if max(ends) > data_size:
        return table, _spans_problem(list(zip(begins, ends, names, strict=True)), data_size)
    return table, None


def _overlap(begins: list[int], ends: list[int]) -> bool:
    """True unless the spans, put in order, follow one another (then none overlap)."""
    ordered = list(chain.from_iterable(sorted(zip(begins, ends, strict=True))))
    return ordered != sorted(ordered)


def _tensor(
    name: str, entry: object
) -> tuple[TensorInfo | None, tuple[int, int, str] | None, str | None]:
    if type(entry) is not dict:
        return (
            None,
            None,
            f"declares tensor {name!r} as a JSON {type(entry).__name__}, not an object",
        )
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not _is_counts(shape, MAX_DIMENSIONS):
        return (
            None,
            None,
            (f"gives tensor {name!r} a shape that is not a list of at most {MAX_DIMENSIONS} sizes"),
        )
    info = TensorInfo(str(dtype), tuple(shape))
    bits = DTYPE_BITS.get(dtype) if type(dtype) is str else None
    if bits is None:
        return info, None, f"gives tensor {name!r} the unknown dtype {dtype!r}"
    if not (_is_counts(offsets, 2) and len(offsets) == 2 and offsets[0] <= offsets[1]):
        return info, None, f"gives tensor {name!r} data_offsets that are not [begin, end]"
    begin, end = offsets
    need = math.prod(shape) * bits
    if need != (end - begin) * 8:
        return (
            info,
            (begin, end, name),
            (
                f"gives tensor {name!r} {end - begin:,} bytes of data "
                f"where its shape and dtype need {need / 8:,.0f}"
            ),
        )
    return info, (begin, end, name), None


def _is_counts(value: object, most: int) -> TypeGuard[list[int]]:
    """A list of at most ``most`` whole numbers, none negative (JSON's true is no number)."""
    return (
        type(value) is list and len(value) <= most and all(type(n) is int and n >= 0 for n in value)
    )


def _spans_problem(spans: list[tuple[int, int, str]], data_size: int) -> str | None:
    """What is wrong with where the tensors' bytes lie: past the file's end, or overlapping."""
    return spans_problem(spans, data_size, "the tensor data")


def spans_problem(spans: list[tuple[int, int, str]], data_size: int, what: str) -> str | None:
    """Shared with GGUF: spans ``(begin, end, name)`` must lie within ``data_size`` bytes
    and must not overlap."""
    previous: tuple[int, int, str] | None = None
    for begin, end, name in sorted(spans):
        if end > data_size:
            return (
                f"places tensor {name!r} at bytes {begin:,}-{end:,} of {what}, "
                f"which has only {data_size:,}"
            )
        if previous is not None and begin < previous[1]:
            return f"places tensors {previous[2]!r} and {name!r} over the same bytes"
        if end > begin:
            previous = (begin, end, name)
    return None


def _bad(size: int, what: str, advice: str) -> Header:
    return Header(format=SAFETENSORS, size=size, problem=_sentence(what, advice))


def _sentence(what: str, advice: str) -> str:
    return f"The safetensors header {what}: {advice}."
