"""The header reader: chunked and one-read alike, every format, and hostile files.

Each hostile file must give a Header with a one-sentence problem: no exception,
no hang, no allocation from a length the file declares.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from support.model_files import (
    gguf_string,
    write_gguf,
    write_raw_safetensors,
    write_safetensors,
)

from modelvault.errors import NotRegularFileError, ValidationError
from modelvault.identify import (
    MAX_HEADER_BYTES,
    AutoV3,
    Header,
    HeaderReader,
    autov2,
    identify,
    read_header,
)

FLUX_LORA = {
    "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (16, 3072),
    "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": (9216, 16),
    "lora_unet_double_blocks_0_img_attn_qkv.alpha": (),
    "lora_unet_single_blocks_0_linear1.lora_down.weight": (16, 3072),
    "lora_unet_single_blocks_0_linear1.lora_up.weight": (21504, 16),
}
TAGS = {"10_ohwx": {"ohwx woman": 40, "smile": 12, "outdoors": 7}}
LORA_METADATA = {
    "ss_base_model_version": "flux1",
    "ss_output_name": "ohwx",
    "ss_tag_frequency": json.dumps(TAGS),
    "ss_resolution": "(1024, 1024)",
}


def chunked(path: Path, size: int) -> Header:
    """The header read by HeaderReader from ``size``-byte chunks, stopping when it is satisfied."""
    data = path.read_bytes()
    reader = HeaderReader(len(data))
    fed = 0
    while fed < len(data) and reader.feed(memoryview(data)[fed : fed + size]):
        fed += size
    assert not reader.wants_more or fed >= len(data)
    return reader.result()


@pytest.fixture
def lora(tmp_path: Path) -> Path:
    return write_safetensors(tmp_path / "ohwx.safetensors", FLUX_LORA, LORA_METADATA)


@pytest.mark.parametrize("size", [1, 7, 8, 4096, 64 * 1024 * 1024])
def test_any_chunk_size_gives_what_one_read_gives(lora: Path, size: int) -> None:
    assert chunked(lora, size) == read_header(lora)


@pytest.mark.parametrize("size", [1, 7, 8, 4096, 64 * 1024 * 1024])
def test_a_gguf_file_reads_the_same_in_any_chunk_size(tmp_path: Path, size: int) -> None:
    path = write_gguf(
        tmp_path / "flux.gguf",
        {"img_in.weight": (3072, 64), "double_blocks.0.img_attn.norm.key_norm.scale": (128,)},
        {"general.architecture": "flux", "general.name": "flux1-dev", "tokens": ["a"] * 100},
    )
    assert chunked(path, size) == read_header(path)


def test_the_reader_wants_no_byte_past_the_header(lora: Path) -> None:
    data = lora.read_bytes()
    (length,) = struct.unpack_from("<Q", data)
    reader = HeaderReader(len(data))
    for index in range(len(data)):
        if not reader.feed(data[index : index + 1]):
            break
    assert index == 8 + length - 1
    assert reader.data_start == 8 + length
    assert reader.needed() == 0
    assert not reader.feed(b"more")  # feeding on does nothing


def test_the_reader_copies_what_it_keeps(lora: Path) -> None:
    """The hasher reuses its buffer: what the reader kept must not change with it."""
    data = lora.read_bytes()
    buffer = bytearray(16)
    reader = HeaderReader(len(data))
    for start in range(0, len(data), 16):
        piece = data[start : start + 16]
        buffer[: len(piece)] = piece
        if not reader.feed(memoryview(buffer)[: len(piece)]):
            break
        buffer[:] = b"\xff" * 16
    assert reader.result() == read_header(lora)


def test_a_safetensors_header_is_read(lora: Path) -> None:
    header = read_header(lora)
    assert header.format == "safetensors"
    assert header.problem is None
    assert header.tensors["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (21504, 16)
    assert header.tensors["lora_unet_double_blocks_0_img_attn_qkv.alpha"].shape == ()
    assert header.metadata["ss_output_name"] == "ohwx"
    assert header.size == lora.stat().st_size


def test_one_read_when_the_header_fits_and_two_when_it_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = {f"model.diffusion_model.block_{i}.weight": (320, 320) for i in range(3000)}
    path = write_safetensors(tmp_path / "big.safetensors", big)
    reads: list[int] = []
    real = os.read

    def counting(fd: int, n: int) -> bytes:
        reads.append(n)
        return real(fd, n)

    monkeypatch.setattr(os, "read", counting)
    header = read_header(path)
    assert len(header.tensors) == 3000
    assert len(reads) == 2, reads
    reads.clear()
    small = write_safetensors(tmp_path / "small.safetensors", {"a": (1,)})
    read_header(small)
    assert len(reads) == 1, reads


def test_autov3_is_the_sha256_of_the_tensor_data(tmp_path: Path) -> None:
    path = write_safetensors(
        tmp_path / "m.safetensors", {"a": (3000, 7), "b": (5,)}, {"x": "y"}, data=os.urandom(1000)
    )
    data = path.read_bytes()
    (length,) = struct.unpack_from("<Q", data)
    expected = hashlib.sha256(data[8 + length :]).hexdigest()
    for size in (1, 7, 8, 4096, len(data)):
        reader = HeaderReader(len(data))
        v3 = AutoV3(reader)
        for start in range(0, len(data), size):
            chunk = memoryview(data)[start : start + size]
            if reader.wants_more:
                reader.feed(chunk)
            v3.update(chunk)
        assert v3.hexdigest() == expected, size


def test_autov3_survives_a_change_of_the_header_metadata(tmp_path: Path) -> None:
    def digest(path: Path) -> str | None:
        data = path.read_bytes()
        reader = HeaderReader(len(data))
        v3 = AutoV3(reader)
        reader.feed(data)
        v3.update(data)
        return v3.hexdigest()

    shapes = {"a": (64,)}
    one = write_safetensors(tmp_path / "one.safetensors", shapes, {"t": "1"}, data=b"abc")
    two = write_safetensors(
        tmp_path / "two.safetensors", shapes, {"t": "a longer title"}, data=b"abc"
    )
    assert one.read_bytes() != two.read_bytes()
    assert digest(one) == digest(two) is not None


def test_autov3_is_none_for_what_is_not_safetensors(tmp_path: Path) -> None:
    data = pickle.dumps({"state_dict": {}}, protocol=2)
    reader = HeaderReader(len(data))
    v3 = AutoV3(reader)
    reader.feed(data)
    v3.update(data)
    assert v3.hexdigest() is None
    unfinished = HeaderReader(1000)
    assert AutoV3(unfinished).hexdigest() is None


def test_autov2_is_the_first_ten_hex_digits() -> None:
    sha = "ab" * 32
    assert autov2(sha) == "ABABABABAB"
    assert autov2(sha.upper()) == "ABABABABAB"
    with pytest.raises(ValidationError, match="not a SHA-256"):
        autov2("abc")


def test_a_gguf_header_is_read(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "wan.gguf",
        {"head.modulation": (1, 6, 5120), "patch_embedding.weight": (5120, 16, 1, 2, 2)},
        {"general.architecture": "wan", "general.alignment": 32, "list": [1, 2, 3]},
        ggml_type=8,
    )
    header = read_header(path)
    assert header.problem is None, header.problem
    assert header.format == "gguf"
    assert header.tensors["head.modulation"].shape == (1, 6, 5120)
    assert header.tensors["head.modulation"].dtype == "Q8_0"
    assert header.metadata == {
        "general.architecture": "wan",
        "general.alignment": 32,
        "list": [1, 2, 3],
    }


def test_a_long_gguf_array_is_passed_over_not_kept(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "t5.gguf", {"x": (4, 32)}, {"vocab": [f"t{i}" for i in range(5000)], "n": 7}
    )
    header = read_header(path)
    assert header.problem is None
    assert header.metadata == {"n": 7}


def test_pickles_and_zips_are_named_never_unpickled(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    legacy = tmp_path / "model.ckpt"
    legacy.write_bytes(pickle.dumps({"x": Boom()}, protocol=2))
    archive = tmp_path / "model.pt"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": Boom()}, protocol=2))
        z.writestr("archive/version", "3\n")
    plain = tmp_path / "notes.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("readme.txt", "hello")
    assert read_header(legacy).format == "pickle"
    assert read_header(archive).format == "pytorch-zip"
    assert read_header(plain).format == "zip"
    assert not (tmp_path / "pwned").exists()
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(legacy.read_bytes())
    identity = identify(read_header(disguised), file_name=disguised.name)
    assert identity.problem is not None
    assert "named .safetensors but is a pickled PyTorch checkpoint" in identity.problem
    assert identity.format == "pickle"
    assert identify(read_header(legacy), file_name=legacy.name).problem is None


def test_read_header_refuses_a_fifo_unopened(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError):
        read_header(fifo)


def _problem(path: Path) -> str:
    header = read_header(path)
    assert header.problem is not None, header
    for size in (1, 7, 4096):
        assert chunked(path, size).problem == header.problem
    assert header.problem.endswith(".")
    assert header.problem[0].isupper()
    return header.problem


def test_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    assert _problem(path) == "The file is empty (0 bytes)."
    assert read_header(path).format == "empty"


def test_a_file_too_short_to_be_a_model(tmp_path: Path) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"abc")
    assert "too short" in _problem(path)


def test_a_header_length_beyond_the_file(tmp_path: Path) -> None:
    path = write_raw_safetensors(tmp_path / "m.safetensors", b"{}" + b" " * 6)
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", 50_000))
    assert "declares a header of 50,000 bytes, but the file has only 16" in _problem(path)


def test_a_header_length_beyond_100_mb_allocates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{" + b" " * 7)
    os.truncate(path, 2**40)  # a sparse terabyte: the length fits in the file
    tracemalloc.start()
    try:
        problem = read_header(path).problem
        reader = HeaderReader(2**40)
        reader.feed(struct.pack("<Q", 2**63) + b"{" + b" " * 7)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problem is not None
    assert f"more than the {MAX_HEADER_BYTES:,} safetensors allows" in problem
    assert reader.result().problem == problem
    assert peak < 4 * 1024 * 1024


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}', "is not valid JSON"),
        (b'{"a": "\xff\xfe"}', "is not UTF-8 (byte 15 is 0xff)"),
        (b'{"a": [[[[1]]]]}', "declares tensor 'a' as a JSON list, not an object"),
        (b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "is nested too deeply"),
        (b"[1, 2, 3]", "is a JSON list, not an object"),
        (b'{"__metadata__": {"k": 1}}', "__metadata__ value that is not a string ('k' is a int)"),
        (b'{"__metadata__": {"k": {"x": "y"}}}', "'k' is a dict"),
        (b'{"__metadata__": ["k"]}', "__metadata__ that is a JSON list"),
        (b'{"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}', "unknown dtype 'Q9'"),
        (b'{"a": {"dtype": "F16", "shape": [-1], "data_offsets": [0, 2]}}', "a shape that is not"),
        (b'{"a": {"dtype": "F16", "shape": [2], "data_offsets": [4, 0]}}', "not [begin, end]"),
        (b'{"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 8]}}', "8 bytes of data where"),
        (b'{"a": 5}', "declares tensor 'a' as a JSON int"),
    ],
)
def test_a_broken_header_is_one_sentence(tmp_path: Path, raw: bytes, expected: str) -> None:
    path = write_raw_safetensors(tmp_path / "m.safetensors", raw, size=8 + len(raw) + 64)
    assert expected in _problem(path)


def test_a_large_header_nested_too_deep_is_refused_before_parsing(tmp_path: Path) -> None:
    padding = b'"__metadata__": {"pad": "' + b"x" * (1024 * 1024) + b'"}'
    raw = b"{" + padding + b', "a": {"dtype": "F16", "shape": [[[[[1]]]]]}}'
    path = write_raw_safetensors(tmp_path / "m.safetensors", raw)
    problem = read_header(path).problem
    assert problem is not None
    assert "is nested 7 levels deep, more than the 4" in problem


def test_too_many_json_values_are_refused_before_parsing(tmp_path: Path) -> None:
    raw = b"{" + b",".join(b'"%d":0' % i for i in range(600_000)) + b"}"
    path = write_raw_safetensors(tmp_path / "m.safetensors", raw)
    problem = read_header(path).problem
    assert problem is not None
    assert "more than 1,000,000 JSON values" in problem


def test_offsets_beyond_the_file_say_it_is_incomplete(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", {"a": (1024, 1024), "b": (16,)})
    os.truncate(path, path.stat().st_size - 10)  # a download cut short
    header = read_header(path)
    assert header.problem is not None
    assert "places tensor 'b' at bytes 2,097,152-2,097,184 of the tensor data" in header.problem
    assert len(header.tensors) == 2  # what could be read is kept


def test_overlapping_tensors(tmp_path: Path) -> None:
    document = {
        "a": {"dtype": "F16", "shape": [8], "data_offsets": [0, 16]},
        "b": {"dtype": "F16", "shape": [8], "data_offsets": [8, 24]},
    }
    raw = json.dumps(document).encode()
    path = write_raw_safetensors(tmp_path / "m.safetensors", raw, size=8 + len(raw) + 24)
    assert "places tensors 'a' and 'b' over the same bytes" in _problem(path)


def test_a_file_in_no_known_format(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"\x00" * 64)
    assert "no format modelvault reads" in _problem(path)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (struct.pack("<IQQ", 1, 0, 0), "GGUF version 1"),
        (struct.pack("<IQQ", 3, 2**40, 0), "far more than any model"),
        (
            struct.pack("<IQQ", 3, 0, 1) + gguf_string("k") + struct.pack("<I", 99),
            "unknown type 99",
        ),
        (struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62), "a string of"),
        (
            struct.pack("<IQQ", 3, 0, 1) + gguf_string("k") + struct.pack("<IIQ", 9, 8, 2**40),
            "an array of",
        ),
        (
            struct.pack("<IQQ", 3, 1, 0) + gguf_string("t") + struct.pack("<I", 99),
            "gives tensor 't' 99 dimensions",
        ),
        (struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2) + b"\xff\xfe", "not UTF-8"),
        (
            struct.pack("<IQQ", 3, 1, 0) + gguf_string("t") + struct.pack("<IQIQ", 1, 4, 77, 0),
            "gives tensor 't' (ggml type 77) a type modelvault does not know",
        ),
        (
            struct.pack("<IQQ", 3, 1, 0) + gguf_string("t") + struct.pack("<IQIQ", 1, 2**30, 0, 0),
            "places tensor 't'",
        ),
        (struct.pack("<IQQ", 3, 5, 0), "ends inside its header"),
    ],
)
def test_a_broken_gguf_header_is_one_sentence(tmp_path: Path, body: bytes, expected: str) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + body + b"\x00" * 64)
    assert expected in _problem(path)


def test_a_huge_gguf_array_of_numbers_is_skipped_without_allocating(tmp_path: Path) -> None:
    body = struct.pack("<IQQ", 3, 0, 1) + gguf_string("k") + struct.pack("<IIQ", 9, 4, 900_000)
    path = tmp_path / "m.gguf"
    with open(path, "wb") as f:
        f.write(b"GGUF" + body)
        f.truncate(len(body) + 4 + 900_000 * 4 + 64)
    tracemalloc.start()
    try:
        header = read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert header.problem is None
    assert header.metadata == {}
    assert peak < 8 * 1024 * 1024


def test_a_header_past_the_limit(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", {f"t{i}": (1,) for i in range(2000)})
    header = read_header(path, limit=1000)
    assert header.problem is not None
    assert "runs past 1,000 bytes" in header.problem


def test_result_before_the_end_says_the_file_ended(lora: Path) -> None:
    data = lora.read_bytes()
    reader = HeaderReader(len(data))
    reader.feed(data[:20])
    assert reader.wants_more
    problem = reader.result().problem
    assert problem is not None
    assert "ends inside its header" in problem
    with pytest.raises(ValidationError, match="size in bytes"):
        HeaderReader(-1)
