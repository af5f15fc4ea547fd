"""Hashing while browsers watch: the workers' rate with 20 clients polling the status
against the rate with none, in the same run.

Model files of real bytes (``--files`` of ``--mib`` MiB, read from the page cache
after the first round) are staged and hashed by the migration manager's workers,
with the web app served from the same process on a loopback port, as ``modelvault
serve`` runs them. Rounds alternate: alone, then watched by ``--clients``
clients in another process (as browsers are), each holding the Server-Sent
Events stream open and asking ``GET /api/status`` every ``--interval`` seconds.
Each round hashes every file again (the catalog is emptied and the files
staged anew between rounds). The ratio of the median rates is what watching
costs: the target is a slowdown of 5 % at most (ratio >= 0.95).

    python bench/status_bench.py [--files 16] [--mib 64] [--rounds 5] [--clients 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete

from modelvault import DatabaseManager
from modelvault.db.models import Model, model_tags
from modelvault.migration.manager import MigrationManager

TARGET = 0.95
DEADLINE = 120.0  # seconds for anything that should take a moment

# The watching clients: each holds the event stream open and polls the status.
# Prints "ready" once every stream has given its first event, then polls until
# its standard input closes, and prints how many answers and events it got.
CLIENTS = r"""
import asyncio, sys
import aiohttp

base, clients, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
counts = {"status": 0, "events": 0}

async def stream(session, opened):
    async with session.get(base + "api/events") as answer:
        async for line in answer.content:
            if line.startswith(b"data:"):
                counts["events"] += 1
                opened.set()

async def poll(session, stop):
    while not stop.is_set():
        async with session.get(base + "api/status") as answer:
            await answer.read()
            counts["status"] += 1
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass

async def main():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        opened = [asyncio.Event() for _ in range(clients)]
        streams = [asyncio.create_task(stream(session, o)) for o in opened]
        await asyncio.gather(*(o.wait() for o in opened))
        polls = [asyncio.create_task(poll(session, stop)) for _ in range(clients)]
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        stop.set()
        await asyncio.gather(*polls)
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    print(counts["status"], counts["events"], flush=True)

asyncio.run(main())
"""


def write_files(folder: Path, count: int, size: int) -> list[Path]:
    block = hashlib.shake_256(b"model bytes").digest(1 << 20)
    paths = []
    for n in range(count):
        path = folder / f"model_{n:03d}.safetensors"
        with path.open("wb") as out:
            out.write(n.to_bytes(8, "little"))
            for _ in range(size // len(block)):
                out.write(block)
        paths.append(path)
    return paths


def stage(db: DatabaseManager, paths: list[Path]) -> None:
    """An empty catalog with every file staged again."""
    with db.engine.begin() as conn:
        conn.execute(delete(model_tags))
        conn.execute(delete(Model.__table__))
    for path in paths:
        db.add_pending_import({"path": str(path), "type": "checkpoint"})


def hashing_rate(db: DatabaseManager, paths: list[Path], workers: int) -> float:
    """Bytes per second through the workers, from start to the last file catalogued."""
    stage(db, paths)
    manager = MigrationManager.for_database(db)
    start = time.perf_counter()
    assert manager.start_processing(workers=workers)
    assert manager.wait(DEADLINE), "the hashing did not end"
    elapsed = time.perf_counter() - start
    status = manager.status()
    assert status.state.value == "done", status
    assert status.files_done == len(paths), status
    return sum(p.stat().st_size for p in paths) / elapsed


@asynccontextmanager
async def watched(address: str, clients: int, interval: float) -> AsyncIterator[list[int]]:
    """``clients`` clients watching the status; yields [answers, events] once they end."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENTS,
        address,
        str(clients),
        str(interval),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    counts: list[int] = []
    try:
        ready = await asyncio.wait_for(child.stdout.readline(), DEADLINE)
        assert ready.strip() == b"ready", "the clients did not connect"
        yield counts
    finally:
        child.stdin.close()
        said = await asyncio.wait_for(child.stdout.readline(), DEADLINE)
        counts.extend(int(n) for n in said.split())
        await asyncio.wait_for(child.wait(), DEADLINE)
    assert child.returncode == 0, "the clients failed"
    assert len(counts) == 2, "the clients did not say what they got"


async def rounds(db: DatabaseManager, paths: list[Path], args: argparse.Namespace) -> Figures:
    """The rates alone and watched, round after round, with the web app served from
    this event loop while the workers hash in their threads."""
    from aiohttp import web

    from modelvault.web import build_app

    runner = web.AppRunner(build_app(db), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    address = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    loop = asyncio.get_running_loop()
    figures = Figures()
    try:
        await loop.run_in_executor(None, hashing_rate, db, paths, args.workers)  # page cache
        for _ in range(args.rounds):
            rate = await loop.run_in_executor(None, hashing_rate, db, paths, args.workers)
            figures.alone.append(rate)
            async with watched(address, args.clients, args.interval) as counts:
                start = time.perf_counter()
                rate = await loop.run_in_executor(None, hashing_rate, db, paths, args.workers)
                figures.seconds += time.perf_counter() - start
            figures.watched.append(rate)
            figures.answers += counts[0]
            figures.events += counts[1]
    finally:
        await runner.cleanup()
    return figures


@dataclass
class Figures:
    alone: list[float] = field(default_factory=list)
    watched: list[float] = field(default_factory=list)
    answers: int = 0
    events: int = 0
    seconds: float = 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between polls")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_files(Path(folder), args.files, args.mib << 20)
        db = DatabaseManager(Path(folder) / "catalog.sqlite3")
        db.init_db()
        figures = asyncio.run(rounds(db, paths, args))
        MigrationManager.for_database(db).close(DEADLINE)
        db.dispose()
    plain, looked_at = statistics.median(figures.alone), statistics.median(figures.watched)
    ratio = looked_at / plain
    print(
        f"{args.files} files of {args.mib} MiB, {args.workers} workers, median of "
        f"{args.rounds} rounds each (SQLite)"
    )
    watching = f"hashing, {args.clients} clients watching"
    print(f"  {'hashing alone':<32} {plain / 2**20:8.1f} MiB/s")
    print(f"  {watching:<32} {looked_at / 2**20:8.1f} MiB/s")
    print(
        f"  (the clients: {figures.answers / figures.seconds:.0f} status answers/s, "
        f"{figures.events / figures.seconds:.0f} events/s while hashing)"
    )
    verdict = "within" if ratio >= TARGET else "BELOW"
    print(f"  ratio {ratio:.3f}  ({verdict} the target of {TARGET}: at most 5 % slower)")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
