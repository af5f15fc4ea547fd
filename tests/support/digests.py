"""Files of known bytes and their digests, for the hashing tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 4096  # small chunks: many chunks, and both threads of the relay, on small files


def make_file(path: Path, size: int, seed: int = 0) -> bytes:
    """A file of ``size`` bytes that depend on ``seed``; returns the bytes."""
    data = hashlib.shake_256(f"{seed}".encode()).digest(size) if size else b""
    path.write_bytes(data)
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
