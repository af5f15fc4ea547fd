"""A sample legacy catalog with real model-like files, for ``modelvault demo``.

It shows every kind of legacy row a user has: files the legacy app hashed and
files it did not, a copy of another file, a file deleted since, odd hashes,
tags in every colour spelling, notes and prompts, an unreadable note, and a
link to a tag that no longer exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelvault.legacy.file import LEGACY_FILE_NAME
from modelvault.legacy.images import LEGACY_IMAGES_FOLDER
from modelvault.migration.demo_folder import DemoFolder
from modelvault.migration.sample import (
    LegacyModel,
    LegacyTag,
    scan_time_ms,
    system_tags,
    write_legacy_catalog,
)

MiB = 1024 * 1024

LEGACY_DATA_FOLDER = "legacy"  # DIR/legacy/hikaze_mm.sqlite3 and its images/


@dataclass(frozen=True)
class _DemoFile:
    id: int
    relative: str
    type: str
    size_mb: float  # in units of the demo's average file size
    hash: str = "unhashed"  # "real", "upper", "short", or "unhashed"
    copy_of: int | None = None
    missing: bool = False
    extra: dict[str, object] | str | None = None
    tags: tuple[int, ...] = ()


_TAGS = [
    LegacyTag(8, "favourite", "#FF8800", 1_724_000_000_000),
    LegacyTag(9, "style", "#36c", 1_724_000_000_000),
    LegacyTag(10, "portrait", "teal", None),
    LegacyTag(11, "to-review", "", None),
    LegacyTag(12, "experimental", "glowing", None),
]

_FILES = [
    _DemoFile(
        1,
        "checkpoints/dreamshaper_8.safetensors",
        "checkpoint",
        2.0,
        "real",
        extra={
            "description": "All-round SD1.5 checkpoint.",
            "prompts": {"positive": "masterpiece, portrait", "negative": "blurry"},
            "images": ["/media/model_1_1724000000_preview.png"],
        },
        tags=(1, 8),
    ),
    _DemoFile(
        2,
        "checkpoints/sdxl_base_1.0.safetensors",
        "checkpoint",
        3.0,
        extra={"description": "SDXL base", "community_links": "https://example.org/sdxl"},
        tags=(1,),
    ),
    _DemoFile(
        3,
        "loras/ink_style.safetensors",
        "lora",
        0.5,
        extra={"description": "Ink wash style", "prompts": {"positive": "ink style"}},
        tags=(2, 9, 8),
    ),
    _DemoFile(4, "loras/copies/ink_style (1).safetensors", "lora", 0.5, copy_of=3, tags=(2, 11)),
    _DemoFile(
        5,
        "loras/old_portrait.safetensors",
        "lora",
        0.5,
        missing=True,
        extra={"description": "deleted since; its notes must survive"},
        tags=(2, 10),
    ),
    _DemoFile(6, "vae/kl-f8-anime.safetensors", "vae", 0.3, "upper", tags=(4,)),
    _DemoFile(7, "embeddings/bad_hands.pt", "embedding", 0.1, "short", tags=(3, 12)),
    _DemoFile(8, "upscale_models/4x_ultrasharp.pth", "upscale", 0.6, tags=(5,)),
    _DemoFile(
        9,
        "controlnet/control_canny.safetensors",
        "controlnet",
        1.4,
        extra="{not json: kept as text",
        tags=(99,),
    ),
    _DemoFile(10, "loras/detail_tweaker.safetensors", "lora", 0.4, tags=(2, 9)),
]


def demo_writes() -> list[str]:
    """Every file a new demo writes, relative to its folder (with ``/``)."""
    legacy = f"{LEGACY_DATA_FOLDER}/{LEGACY_FILE_NAME}"
    images = f"{LEGACY_DATA_FOLDER}/{LEGACY_IMAGES_FOLDER}"
    return [
        *(f"models/{spec.relative}" for spec in _FILES),
        *(f"{images}/{name}" for name in _preview_names()),
        legacy + ".partial",
        legacy,
    ]


def check_demo_folder(folder: str | os.PathLike[str]) -> DemoFolder:
    """The demo's folder, or ``DemoFolderError``; nothing is written.

    A folder that exists is only taken when it is empty or holds a previous
    demo, and a file in it is only replaced when the demo's marker lists it:
    anything else may be the user's (a ComfyUI folder has the very paths the
    demo writes).
    """
    root = Path(folder)
    finished = (root / LEGACY_DATA_FOLDER / LEGACY_FILE_NAME).is_file()
    return DemoFolder.check(root, () if finished else demo_writes())


def claim_demo_folder(folder: str | os.PathLike[str]) -> Path:
    """Make ``folder`` the demo's (created, with its marker), or refuse it
    (``check_demo_folder``) before anything is written."""
    check_demo_folder(folder).claim()
    return Path(folder)


def build_demo(
    folder: str | os.PathLike[str],
    *,
    file_mb: float = 48.0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Create the model files and the legacy catalog under ``folder``; return the catalog.

    The folder is checked and claimed first (``claim_demo_folder``). A folder
    that holds a finished demo is reused as it is, so running the demo again
    continues (or repeats, harmlessly) the same migration. ``progress`` is told
    each file as it is written.
    """
    demo = check_demo_folder(folder)
    demo.claim()
    root = demo.root
    # In a folder of its own, as in the legacy app's data folder: the catalog's
    # image store (images/ beside DIR/catalog.sqlite3) is then not the legacy one.
    legacy = root / LEGACY_DATA_FOLDER / LEGACY_FILE_NAME
    if legacy.exists():
        return legacy
    digests: dict[int, str] = {}
    rows: list[LegacyModel] = []
    for number, spec in enumerate(_FILES, 1):
        path = demo.path_to_write(f"models/{spec.relative}")
        if progress:
            progress(f"writing model file {number}/{len(_FILES)}: {spec.relative}")
        if spec.copy_of is not None:
            source = root / "models" / next(f.relative for f in _FILES if f.id == spec.copy_of)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(source.read_bytes())
            digests[spec.id] = digests[spec.copy_of]
        else:
            digests[spec.id] = _write_model_file(path, int(spec.size_mb * file_mb * MiB), spec.id)
        stat = path.stat()
        if spec.missing:
            path.unlink()
        rows.append(_legacy_row(spec, path, stat, digests[spec.id]))
    links = [(spec.id, tag) for spec in _FILES for tag in spec.tags]
    _write_previews(demo, f"{LEGACY_DATA_FOLDER}/{LEGACY_IMAGES_FOLDER}")
    partial = demo.path_to_write(f"{LEGACY_DATA_FOLDER}/{LEGACY_FILE_NAME}.partial")
    partial.unlink(missing_ok=True)
    write_legacy_catalog(partial, rows=rows, tags=[*system_tags(), *_TAGS], links=links)
    # A half-built demo is never mistaken for a finished one.
    partial.rename(demo.path_to_write(f"{LEGACY_DATA_FOLDER}/{LEGACY_FILE_NAME}"))
    return legacy


def _legacy_row(spec: _DemoFile, path: Path, stat: os.stat_result, digest: str) -> LegacyModel:
    return LegacyModel(
        id=spec.id,
        path=str(path),
        name=path.name,
        type=spec.type,
        size_bytes=stat.st_size,
        hash_hex=_legacy_hash(spec.hash, digest),
        created_at=scan_time_ms(stat.st_mtime_ns),  # scanned once written
        extra_json=spec.extra
        if isinstance(spec.extra, str) or spec.extra is None
        else json.dumps(spec.extra),
    )


# A preview no row names, as a real folder has after previews were replaced.
_UNNAMED_PREVIEW = "/media/model_1_1723000000_preview.png"


def _preview_names() -> list[str]:
    urls = [url for spec in _FILES for url in _images_of(spec)] + [_UNNAMED_PREVIEW]
    return [url.rsplit("/", 1)[-1] for url in urls]


def _write_previews(demo: DemoFolder, folder: str) -> None:
    """The legacy app's images/ folder: each preview a row names (a tiny PNG), and
    one file no row names."""
    for number, name in enumerate(_preview_names()):
        path = demo.path_to_write(f"{folder}/{name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(number))


def _images_of(spec: _DemoFile) -> list[str]:
    images = spec.extra.get("images") if isinstance(spec.extra, dict) else None
    return [str(url) for url in images] if isinstance(images, list) else []


def _png(seed: int) -> bytes:
    """A valid 1x1 PNG whose colour depends on ``seed`` (so each file has its own hash)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    pixel = bytes([0, (seed * 70) % 256, 120, 200])  # filter byte, then R G B
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(pixel))
        + chunk(b"IEND", b"")
    )


def _legacy_hash(kind: str, digest: str) -> str:
    if kind == "real":
        return digest
    if kind == "upper":
        return f"  {digest.upper()} "
    if kind == "short":
        return digest[:10].upper()  # the AutoV2 form some tools show
    return ""


def _write_model_file(path: Path, size: int, seed: int) -> str:
    """A safetensors-shaped file: a JSON header and pseudo-random tensor bytes."""
    data_size = max(0, size - 256)
    header = (
        json.dumps(
            {
                "__metadata__": {"format": "pt", "modelvault_demo": str(seed)},
                "weight": {
                    "dtype": "F16",
                    "shape": [data_size // 2],
                    "data_offsets": [0, data_size],
                },
            }
        )
        .encode()
        .ljust(248)
    )
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.shake_256(f"modelvault demo {seed}".encode()).digest(MiB)
    with path.open("wb") as out:
        for chunk in (struct.pack("<Q", len(header)), header):
            out.write(chunk)
            digest.update(chunk)
        written = 0
        while written < data_size:
            piece = block[: min(MiB, data_size - written)]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()
