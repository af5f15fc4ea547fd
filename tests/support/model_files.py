"""Writers of real model files for the identification tests, and tensors to write.

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


# -- tensors as the families' real files have them ------------------------------------


def kohya(prefix: str, layer: str, rank: int, width: int) -> Shapes:
    return {
        f"{prefix}{layer}.lora_down.weight": (rank, width),
        f"{prefix}{layer}.lora_up.weight": (width, rank),
        f"{prefix}{layer}.alpha": (),
    }


SD_TE = "text_model_encoder_layers_0_self_attn_q_proj"
SDXL_LORA: Shapes = {
    **kohya("lora_te1_", SD_TE, 8, 768),
    **kohya("lora_te2_", SD_TE, 8, 1280),
    **kohya("lora_unet_", "input_blocks_4_1_transformer_blocks_0_attn1_to_q", 8, 640),
}
LORA_METADATA = {
    "ss_tag_frequency": json.dumps({"10_ink": {"inkwash": 12, "brush": 3}}),
    "ss_resolution": "(1024, 1024)",
    "ss_output_name": "ink_style",
}
DM = "model.diffusion_model."
SD15_CHECKPOINT: Shapes = {
    f"{DM}input_blocks.0.0.weight": (320, 4, 3, 3),
    f"{DM}input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 768),
    f"{DM}input_blocks.4.1.proj_in.weight": (640, 640),
    f"{DM}middle_block.1.transformer_blocks.0.attn2.to_v.weight": (1280, 768),
    f"{DM}out.2.weight": (4, 320, 3, 3),
    f"{DM}time_embed.0.weight": (1280, 320),
    "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3),
    "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3),
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
}


def lora_file(folder: Path, name: str = "ink_style.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_safetensors(folder / name, SDXL_LORA, LORA_METADATA, data=b"lora-data")
