"""Checks of the model file writers the identification tests use (support.model_files):
what they write reads back as the formats say."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from support.model_files import write_gguf, write_safetensors


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
