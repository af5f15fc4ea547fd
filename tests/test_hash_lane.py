"""A second digest beside the SHA-256 (``hash_file_digest(beside=...)``): every chunk, in
file order, from the relay's own buffers without a copy, in a thread of its own that
never outlives the hashing. Real files, real threads."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from support.digests import CHUNK, make_file, sha
from support.model_files import write_safetensors

from modelvault.errors import HashCancelled
from modelvault.hashing import HashControl, hash_file_digest
from modelvault.identify.catalog import HeaderTap


class Slow:
    """A second digest slower than the first (two updates per chunk), so the relay's
    threads wait for it before they read into a buffer it still holds."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.chunks = 0
        self.threads: set[str] = set()

    def __call__(self, chunk: memoryview) -> None:
        self.threads.add(threading.current_thread().name)
        hashlib.sha256(chunk).digest()
        self.digest.update(chunk)
        self.chunks += 1


def lanes() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "modelvault-hash-beside"]


@pytest.mark.parametrize("size", [0, 100, CHUNK, 7 * CHUNK + 5, 64 * CHUNK])
def test_the_digest_beside_sees_every_byte_in_order(tmp_path: Path, size: int) -> None:
    data = make_file(tmp_path / "model.bin", size)
    beside = Slow()

    digest = hash_file_digest(tmp_path / "model.bin", chunk_size=CHUNK, beside=beside)

    assert digest.sha256 == sha(data)
    assert beside.digest.hexdigest() == sha(data)
    assert not lanes()


def test_the_digest_beside_runs_in_a_thread_of_its_own(tmp_path: Path) -> None:
    make_file(tmp_path / "model.bin", 16 * CHUNK)
    beside = Slow()
    hash_file_digest(tmp_path / "model.bin", chunk_size=CHUNK, beside=beside)
    assert beside.threads == {"modelvault-hash-beside"}


def test_a_failure_beside_ends_the_hashing_and_leaves_no_thread(tmp_path: Path) -> None:
    make_file(tmp_path / "model.bin", 16 * CHUNK)

    def failing(chunk: memoryview) -> None:
        raise RuntimeError("the second digest broke")

    with pytest.raises(RuntimeError, match="second digest broke"):
        hash_file_digest(tmp_path / "model.bin", chunk_size=CHUNK, beside=failing)
    assert not lanes()


def test_a_stop_ends_the_lane_beside_too(tmp_path: Path) -> None:
    make_file(tmp_path / "model.bin", 64 * CHUNK)
    control = HashControl()
    seen = 0

    def stop_at_the_fourth(n: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 4:
            control.stop()

    beside = Slow()
    with pytest.raises(HashCancelled):
        hash_file_digest(
            tmp_path / "model.bin",
            chunk_size=CHUNK,
            control=control,
            on_progress=stop_at_the_fourth,
            beside=beside,
        )
    assert beside.chunks < 64
    assert not lanes()


def test_autov3_beside_the_sha256_matches_the_tensor_datas_digest(tmp_path: Path) -> None:
    shapes = {"lora_unet_a.lora_down.weight": (8, 4096), "lora_unet_a.lora_up.weight": (4096, 8)}
    path = write_safetensors(tmp_path / "lora.safetensors", shapes, data=b"tensor-bytes")
    data = path.read_bytes()
    assert len(data) > 16 * CHUNK  # many chunks, through both threads of the relay
    tap = HeaderTap(autov3=True)

    digest = hash_file_digest(path, chunk_size=CHUNK, tap=tap, beside=tap.beside())

    header_end = 8 + int.from_bytes(data[:8], "little")
    assert digest.sha256 == sha(data)
    assert tap.found(path.name)["autov3"] == sha(data[header_end:])
    assert not lanes()
