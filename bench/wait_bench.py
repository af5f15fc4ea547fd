"""What the client's deadline on each wait for PostgreSQL costs, against a floor
measured in the same run.

    python bench/wait_bench.py [--postgres URL] [--queries N] [--repeat N]

The URL defaults to ``MODELVAULT_TEST_POSTGRES_URL``. Both sides run the same
``SELECT 1`` round trips on one connection, interleaved, best of ``--repeat``:

- floor: a plain psycopg connection (SQLAlchemy's ``create_engine``);
- watched: a catalog engine's connection, every wait of which arms a deadline
  (``modelvault.db.deadline``) and whose server gets our timeouts and keepalives.

Printed: microseconds per round trip for each, and the ratio watched / floor
(a ``SELECT 1`` on a local server is the worst case: the bookkeeping is a
fixed cost of a few microseconds per wait, and real statements take longer).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, create_engine  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from modelvault.db.engine import create_catalog_engine  # noqa: E402


def per_query_us(engine: Engine, queries: int) -> float:
    """Microseconds per ``SELECT 1`` round trip on one connection of ``engine``."""
    with engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        cursor = raw.cursor()
        start = time.perf_counter()
        for _ in range(queries):
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return (time.perf_counter() - start) / queries * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("MODELVAULT_TEST_POSTGRES_URL"))
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if not args.postgres:
        parser.error("give --postgres URL or set MODELVAULT_TEST_POSTGRES_URL")
    url = make_url(args.postgres).set(drivername="postgresql+psycopg")
    floor, watched = create_engine(url), create_catalog_engine(url)
    try:
        times: dict[str, list[float]] = {"floor": [], "watched": []}
        for _ in range(args.repeat):  # interleaved: a noisy machine slows both alike
            times["floor"].append(per_query_us(floor, args.queries))
            times["watched"].append(per_query_us(watched, args.queries))
    finally:
        floor.dispose()
        watched.dispose()
    best = {name: min(values) for name, values in times.items()}
    print(f"SELECT 1 round trips, best of {args.repeat} x {args.queries}:")
    print(f"  floor (plain psycopg)      {best['floor']:8.1f} us")
    print(f"  watched (catalog engine)   {best['watched']:8.1f} us")
    print(f"  ratio watched / floor      {best['watched'] / best['floor']:8.2f}")


if __name__ == "__main__":
    main()
