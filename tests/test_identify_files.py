"""Writers of real model files for the identification tests, and checks of the writers.

Files are written in their own formats byte by byte (safetensors: 8-byte length,
JSON, data; GGUF: its binary header), each tensor with its family's real name
and shape. The tensor data itself is a sparse hole (``truncate``): a 12 GB
checkpoint's header costs a few KB on disk.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

from modelvault.identify.safetensors_format import DTYPE_BITS

Shapes = Mapping[str, tuple[int, ...]]


def safetensors_bytes(
    tensors: Mapping[str, tuple[str, tuple[int, ...]]],
    metadata: Mapping[str, object] | None = None,
) -> tuple[bytes, int]:
    """The header of a safetensors file (length and JSON, padded to 8) and its data size."""
    document: dict[str, object] = {}
    if metadata is not None:
        document["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for n in shape:
            count *= n
        nbytes = count * DTYPE_BITS[dtype] // 8
        document[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(document, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def write_safetensors(
    path: Path,
    shapes: Shapes,
    metadata: Mapping[str, object] | None = None,
    *,
    dtype: str = "F16",
    data: bytes | None = None,
) -> Path:
    """A safetensors file with these tensors (all of ``dtype``); their data is a hole,
    or ``data`` repeated where given."""
    header, size = safetensors_bytes(
        {name: (dtype, shape) for name, shape in shapes.items()}, metadata
    )
    with open(path, "wb") as f:
        f.write(header)
        if data is not None:
            f.write((data * (size // max(len(data), 1) + 1))[:size])
        f.truncate(len(header) + size)
    return path


def write_raw_safetensors(path: Path, raw_header: bytes, size: int | None = None) -> Path:
    """A file holding this length-prefixed header JSON, then ``size`` bytes in all (a hole)."""
    body = struct.pack("<Q", len(raw_header)) + raw_header
    with open(path, "wb") as f:
        f.write(body)
        f.truncate(size if size is not None else len(body))
    return path


GGUF_STRING, GGUF_ARRAY, GGUF_U32, GGUF_F32 = 8, 9, 4, 6


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_value(value: object) -> bytes:
    if isinstance(value, str):
        return struct.pack("<I", GGUF_STRING) + gguf_string(value)
    if isinstance(value, int):
        return struct.pack("<II", GGUF_U32, value)
    if isinstance(value, float):
        return struct.pack("<If", GGUF_F32, value)
    assert isinstance(value, list)
    if value and isinstance(value[0], str):
        items = b"".join(gguf_string(v) for v in value)
        return struct.pack("<IIQ", GGUF_ARRAY, GGUF_STRING, len(value)) + items
    items = b"".join(struct.pack("<I", v) for v in value)
    return struct.pack("<IIQ", GGUF_ARRAY, GGUF_U32, len(value)) + items


def write_gguf(
    path: Path,
    shapes: Shapes,
    metadata: Mapping[str, object],
    *,
    ggml_type: int = 1,
    version: int = 3,
) -> Path:
    """A GGUF file (F16 tensors by default) with these tensors (shapes outermost first, as
    PyTorch gives them) and key/values; the data is a hole after 32-byte alignment."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(shapes), len(metadata)))
    for key, value in metadata.items():
        out += gguf_string(key) + gguf_value(value)
    offset = 0
    block, type_size = {1: (1, 2), 0: (1, 4), 8: (32, 34)}[ggml_type]
    for name, shape in shapes.items():
        dims = list(reversed(shape))
        out += gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
        count = 1
        for n in shape:
            count *= n
        offset += -(-(count // block * type_size) // 32) * 32
    start = -(-len(out) // 32) * 32
    with open(path, "wb") as f:
        f.write(out)
        f.truncate(start + offset)
    return path


def test_a_written_safetensors_file_reads_back_with_plain_json(tmp_path: Path) -> None:
    path = write_safetensors(
        tmp_path / "m.safetensors", {"a.weight": (4, 8), "b": (3,)}, {"k": "v"}
    )
    raw = path.read_bytes()
    (length,) = struct.unpack_from("<Q", raw)
    document = json.loads(raw[8 : 8 + length])
    assert document["__metadata__"] == {"k": "v"}
    assert document["a.weight"] == {"dtype": "F16", "shape": [4, 8], "data_offsets": [0, 64]}
    assert document["b"]["data_offsets"] == [64, 70]
    assert len(raw) == 8 + length + 70


def test_a_written_gguf_file_holds_its_counts(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", {"x": (2, 16)}, {"general.architecture": "flux"})
    raw = path.read_bytes()
    assert raw[:4] == b"GGUF"
    assert struct.unpack_from("<IQQ", raw, 4) == (3, 1, 1)
    assert len(raw) % 32 == 0
