"""A page of models through the web API against ``find_models`` called directly.

A SQLite catalog of 100,000 models (each with two tags and a note) is filled
with plain ``executemany``; then a page of 100 models, sorted by name, at a few
offsets, is fetched over HTTP from the app on a loopback port (as the browser
asks for it: ``/api/models?limit=100&offset=N``) and read directly with
``find_models`` plus ``count_models`` (the page's total). The ratio of the
medians is the API's cost: the target is 1.5 at most, and a page through the
API under 50 ms (each order is read from its index: schema revision v6).

    python bench/web_bench.py [--models 100000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_bench import fill

from modelvault import DatabaseManager

PAGE = 100
TARGET = 1.5
TARGET_MS = 50.0


def direct(db: DatabaseManager, offset: int) -> float:
    start = time.perf_counter()
    db.find_models(limit=PAGE, offset=offset)
    db.count_models()
    return time.perf_counter() - start


async def through_api(db: DatabaseManager, offsets: list[int], rounds: int) -> list[float]:
    import aiohttp
    from aiohttp import web

    from modelvault.web import build_app

    runner = web.AppRunner(build_app(db), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/models"
    times: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(rounds):
                for offset in offsets:
                    start = time.perf_counter()
                    async with session.get(f"{base}?limit={PAGE}&offset={offset}") as answer:
                        page = await answer.json()
                    times.append(time.perf_counter() - start)
                    assert len(page["models"]) == PAGE, page
    finally:
        await runner.cleanup()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    offsets = [0, args.models // 2, args.models - PAGE]
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
        fill(url, args.models)
        db = DatabaseManager(url)
        db.init_db()
        direct(db, 0)  # warm the cache for both
        api = asyncio.run(through_api(db, offsets, args.rounds))
        plain = [direct(db, offset) for _ in range(args.rounds) for offset in offsets]
        db.dispose()
    api_ms, plain_ms = statistics.median(api) * 1000, statistics.median(plain) * 1000
    ratio = api_ms / plain_ms
    print(
        f"{args.models:,} models, pages of {PAGE} at offsets {offsets}, median of "
        f"{len(api)} pages each (SQLite)"
    )
    print(f"  find_models + count_models  {plain_ms:7.1f} ms")
    print(f"  GET /api/models (HTTP)      {api_ms:7.1f} ms")
    within = ratio <= TARGET and api_ms < TARGET_MS
    verdict = "within" if within else "ABOVE"
    print(
        f"  ratio {ratio:.2f}, {api_ms:.1f} ms a page  ({verdict} the targets of "
        f"{TARGET} and {TARGET_MS:.0f} ms)"
    )
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
