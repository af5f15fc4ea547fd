"""Benchmark of reading model headers, each figure against a floor measured in the same run.

    python bench/identify_bench.py                     # 1 GiB file, 2,000 headers
    python bench/identify_bench.py --gib 0.25 --files 500 --repeat 2   # quicker

(a) Hashing one 1 GiB safetensors file (sparse: its tensor data is a hole, so
    the figures are the CPU's, not the disk's), 2 MiB chunks, best of
    ``--repeat``:
    - floor: a plain ``readinto`` + ``sha256.update`` loop;
    - the same loop with a ``HeaderReader`` fed alongside until it has the
      header; target: rate >= 0.9 of the floor's;
    - with AutoV3 in the same thread as the SHA-256 (both digests in turn);
    - with AutoV3 side by side: the SHA-256 and AutoV3 each in a thread of
      its own, taking the same chunks in file order (hashlib releases the GIL
      for large updates), as the worker runs them (``hash_lane``).
(b) ``read_header`` (and ``identify``) on 2,000 small safetensors files, against
    an ``os.stat`` of the same files, all in the page cache: once with a small
    header (250 tensors, ~20 KiB: a VAE's, an embedding's), once with a kohya
    SDXL LoRA's (700 tensors and its training metadata, ~128 KiB). Printed:
    time per file, the ratio, and the time for 10,000 models.
(c) ``modelvault identify --all``'s path end to end (``identify_models``: the
    reads, identification, and the writes to a SQLite catalog, a batch per
    transaction) on ``--models`` (10,000) small safetensors files, with one
    thread, with a pool of threads, and as the command does it (worker
    processes, one per core, where there is more than one), against an
    ``os.stat`` of the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from modelvault.identify import AutoV3, HeaderReader, identify, read_header  # noqa: E402

CHUNK = 2 * 1024 * 1024
GIB = 1024**3
RATIO_TARGET = 0.9


def write_model(path: Path, data_bytes: int, tensors: int, metadata: dict[str, str]) -> None:
    """A safetensors file whose ``tensors`` F16 tensors fill ``data_bytes`` (a sparse hole)."""
    each = data_bytes // tensors // 4 * 4
    document: dict[str, object] = {"__metadata__": metadata}
    for i in range(tensors):
        block, part = divmod(i, 3)
        layer = f"lora_unet_output_blocks_{block}_1_transformer_blocks_0_attn1_to_q"
        name = f"{layer}.{('lora_down.weight', 'lora_up.weight', 'alpha')[part]}"
        shape = [each // 2] if part == 2 else [2, each // 4]
        document[name] = {
            "dtype": "F16",
            "shape": shape,
            "data_offsets": [i * each, (i + 1) * each],
        }
    raw = json.dumps(document).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + each * tensors)


def lora_metadata() -> dict[str, str]:
    tags = {"10_ohwx": {f"tag {i}": 1000 - i for i in range(1500)}}
    return {
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
        "ss_network_module": "networks.lora",
        "ss_resolution": "(1024, 1024)",
        "ss_tag_frequency": json.dumps(tags),
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.title": "ohwx",
    }


def hash_loop(path: Path, extra: Callable[[int], Callable[[memoryview], None]] | None) -> float:
    """Seconds for a readinto + sha256 loop; ``extra(size)`` gives a per-chunk step beside it."""
    size = path.stat().st_size
    step = extra(size) if extra else None
    sha = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            chunk = view[:n]
            sha.update(chunk)
            if step:
                step(chunk)
    return time.perf_counter() - start


def with_reader(size: int) -> Callable[[memoryview], None]:
    reader = HeaderReader(size)

    def step(chunk: memoryview) -> None:
        if reader.wants_more:
            reader.feed(chunk)

    return step


def with_autov3(size: int) -> Callable[[memoryview], None]:
    reader = HeaderReader(size)
    v3 = AutoV3(reader)

    def step(chunk: memoryview) -> None:
        if reader.wants_more:
            reader.feed(chunk)
        v3.update(chunk)

    return step


def side_by_side(path: Path) -> float:
    """Seconds with the SHA-256 and AutoV3 each in its own thread, on the same chunks."""
    size = path.stat().st_size
    reader = HeaderReader(size)
    v3 = AutoV3(reader)
    sha = hashlib.sha256()
    buffers = [bytearray(CHUNK) for _ in range(4)]
    free: queue.Queue[int] = queue.Queue()
    for index in range(len(buffers)):
        free.put(index)
    users = [0] * len(buffers)
    lock = threading.Lock()
    lanes: list[queue.Queue[tuple[int, int] | None]] = [queue.Queue(), queue.Queue()]

    def lane(
        work: queue.Queue[tuple[int, int] | None], update: Callable[[memoryview], None]
    ) -> None:
        while (item := work.get()) is not None:
            index, n = item
            update(memoryview(buffers[index])[:n])
            with lock:
                users[index] -= 1
                done = users[index] == 0
            if done:
                free.put(index)

    threads = [
        threading.Thread(target=lane, args=(lanes[0], sha.update)),
        threading.Thread(target=lane, args=(lanes[1], v3.update)),
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    with open(path, "rb", buffering=0) as f:
        while True:
            index = free.get()
            n = f.readinto(buffers[index])
            if not n:
                break
            if reader.wants_more:  # before AutoV3 sees the chunk
                reader.feed(memoryview(buffers[index])[:n])
            users[index] = 2
            for work in lanes:
                work.put((index, n))
    for work in lanes:
        work.put(None)
    for thread in threads:
        thread.join()
    assert v3.hexdigest() is not None
    return time.perf_counter() - start


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def bench_hashing(folder: Path, gib: float, repeat: int) -> bool:
    path = folder / "big.safetensors"
    write_model(path, int(gib * GIB), 2200, lora_metadata())
    size = path.stat().st_size
    hash_loop(path, None)  # a first read, so every run finds the same page cache
    floor = best(repeat, lambda: hash_loop(path, None))
    rows = [
        ("header reader alongside", best(repeat, lambda: hash_loop(path, with_reader))),
        ("AutoV3 in the same thread", best(repeat, lambda: hash_loop(path, with_autov3))),
        ("AutoV3 side by side (2 threads)", best(repeat, lambda: side_by_side(path))),
    ]
    mib = size / 2**20
    print(f"(a) hashing {mib:,.0f} MiB in {CHUNK // 2**20} MiB chunks, best of {repeat}")
    print(f"    {'floor: readinto + sha256':<34} {mib / floor:8.0f} MiB/s  ratio 1.00")
    for label, seconds in rows:
        print(f"    {label:<34} {mib / seconds:8.0f} MiB/s  ratio {floor / seconds:.2f}")
    reader_ratio = floor / rows[0][1]
    verdict = "ok" if reader_ratio >= RATIO_TARGET else "BELOW TARGET"
    print(
        f"    header reader: {reader_ratio:.2f} of the floor (target >= {RATIO_TARGET}): {verdict}"
    )
    return reader_ratio >= RATIO_TARGET


def bench_headers(folder: Path, files: int, repeat: int) -> None:
    kinds = (
        ("small header", 250, {}),  # a VAE's or an embedding's size of header
        ("LoRA header", 700, lora_metadata()),  # a kohya LoRA: its layers and training metadata
    )
    print(f"(b) {files:,} files each, in the page cache, best of {repeat}")
    for label, tensors, metadata in kinds:
        paths = []
        for i in range(files):
            path = folder / f"{tensors}_{i:05d}.safetensors"
            write_model(path, 1 << 20, tensors, metadata)
            paths.append(path)
        kib = struct.unpack("<Q", paths[0].read_bytes()[:8])[0] / 1024
        _read_all(paths)  # the page cache holds every file for every side alike
        floor = best(repeat, lambda paths=paths: _stat_all(paths))
        read = best(repeat, lambda paths=paths: _read_all(paths))
        whole = best(repeat, lambda paths=paths: _identify_all(paths))
        print(f"    {label} ({tensors} tensors, {kib:.0f} KiB)")
        print(f"      {'floor: os.stat':<30} {floor / files * 1e6:8.1f} us/file")
        for what, seconds in (("read_header", read), ("read_header + identify", whole)):
            print(
                f"      {what:<30} {seconds / files * 1e6:8.1f} us/file"
                f"  ratio {seconds / floor:5.0f}  (10,000 models: {seconds / files * 10_000:.1f} s)"
            )
        for path in paths:
            path.unlink()


def bench_command(folder: Path, count: int, repeat: int) -> None:
    from sqlalchemy import insert

    from modelvault.database import DatabaseManager
    from modelvault.db.models import Model
    from modelvault.identify.readers import Readers
    from modelvault.identify.refresh import THREADS, identify_models, models_to_identify

    models = folder / "models"
    models.mkdir()
    paths = []
    for i in range(count):
        path = models / f"m_{i:05d}.safetensors"
        write_model(path, 1 << 20, 250, {"ss_output_name": f"m{i}"})
        paths.append(path)
    db = DatabaseManager(folder / "catalog.sqlite3")
    db.init_db()
    rows = [
        {"sha256": f"{i:064x}", "path": str(p), "name": p.name, "type": "lora"}
        for i, p in enumerate(paths)
    ]
    with db.session_scope() as session:
        session.execute(insert(Model), rows)
    shas = models_to_identify(db)
    _read_all(paths)  # the page cache holds every file for every side alike

    def run(threads: int, processes: int | None) -> float:
        start = time.perf_counter()
        report = identify_models(db, shas, threads=threads, processes=processes)
        assert report.identified == count, report
        return time.perf_counter() - start

    floor = best(repeat, lambda: _stat_all(paths))
    one = best(repeat, lambda: run(1, 0))
    pool = best(repeat, lambda: run(THREADS, 0))
    chosen = Readers.for_files(count, threads=THREADS, processes=None)
    chosen.__exit__(None, None, None)
    command = best(repeat, lambda: run(THREADS, None))
    print(f"(c) identify --all's path on {count:,} models (SQLite catalog), best of {repeat}")
    print(f"    {'floor: os.stat':<34} {floor:7.2f} s  ({floor / count * 1e6:.1f} us/file)")
    rows = (
        ("one thread", one),
        (f"{THREADS} threads", pool),
        (
            f"{chosen.processes or THREADS} {'processes' if chosen.processes else 'threads'}"
            " (as the command)",
            command,
        ),
    )
    for label, seconds in rows:
        print(
            f"    {label:<34} {seconds:7.2f} s  ({seconds / count * 1e6:.0f} us/file, "
            f"ratio {seconds / floor:.0f})"
        )
    db.dispose()


def _stat_all(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        os.stat(path)
    return time.perf_counter() - start


def _read_all(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        assert read_header(path).problem is None
    return time.perf_counter() - start


def _identify_all(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        identify(read_header(path), file_name=path.name)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the file for (a) [1]")
    parser.add_argument("--files", type=int, default=2000, help="files for (b) [2000]")
    parser.add_argument("--models", type=int, default=10_000, help="models for (c) [10000]")
    parser.add_argument("--skip", default="", help="letters of the parts to skip, e.g. 'ab'")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best counts)")
    parser.add_argument("--dir", default=None, help="where to make the files [a temporary folder]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="identify-bench-", dir=args.dir) as tmp:
        ok = "a" in args.skip or bench_hashing(Path(tmp), args.gib, args.repeat)
        if "b" not in args.skip:
            bench_headers(Path(tmp), args.files, args.repeat)
        if "c" not in args.skip:
            bench_command(Path(tmp), args.models, args.repeat)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
