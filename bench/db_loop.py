"""The transaction with no HTTP at all: ``python -m bench.db_loop --statement S``.

``--statement baseline`` runs the bare app's four round trips (BEGIN, UPDATE,
INSERT, COMMIT); ``--statement service`` runs the service's single
``UPDATE_TASKS`` statement. ``--concurrency`` tasks share a pool of
``--pool`` connections for ``--seconds``; prints one JSON line. It shows
what the database alone allows, and what a round trip costs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import random
import sys
import time
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from bench.baseline_app import run_transaction
from bench.report import percentile

if TYPE_CHECKING:
    _Connection = asyncpg.pool.PoolConnectionProxy[Any]


async def _baseline_transaction(conn: _Connection, task_ids: list[int], users: list[int]) -> None:
    await run_transaction(conn, task_ids, users)


@functools.cache
def _service_statement() -> str:
    """The service's one-statement update, wherever its repository keeps it."""
    for module_name in (
        "service.repository",
        "service.repository.reassign",
        "service.repository.tasks",
    ):
        try:
            statement = getattr(importlib.import_module(module_name), "UPDATE_TASKS", None)
        except ImportError:
            continue
        if isinstance(statement, str):
            return statement
    raise RuntimeError("UPDATE_TASKS not found in service.repository")


async def _service_transaction(conn: _Connection, task_ids: list[int], users: list[int]) -> None:
    count = len(task_ids)
    await conn.fetchrow(
        _service_statement(),
        task_ids,
        users,
        [None] * count,
        [None] * count,
        [None] * count,
        [False] * count,
        "bench-db-loop",
    )


async def _jsonb_codec(conn: asyncpg.Connection) -> None:
    # As the service's pool does: jsonb decoded with orjson.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def run(args: argparse.Namespace) -> dict[str, float]:
    pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"],
        min_size=args.pool,
        max_size=args.pool,
        init=_jsonb_codec,
    )
    assert pool is not None
    transaction = _service_transaction if args.statement == "service" else _baseline_transaction
    latencies: list[float] = []
    deadline = time.monotonic() + args.seconds

    async def worker(index: int) -> None:
        rng = random.Random(index)
        while time.monotonic() < deadline:
            first = rng.randrange(args.tasks // 10) * 10
            user = rng.randrange(args.users)
            task_ids = [first + j for j in range(1, 11)]
            users = [(user + j) % args.users + 1 for j in range(1, 11)]
            started = time.monotonic()
            async with pool.acquire() as conn:
                await transaction(conn, task_ids, users)
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for index in range(args.concurrency):
            tg.create_task(worker(index))
    elapsed = time.monotonic() - started
    await pool.close()
    return {
        "transactions": len(latencies),
        "seconds": elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.db_loop", description=__doc__)
    parser.add_argument("--statement", choices=["baseline", "service"], required=True)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    sys.stdout.write(json.dumps(asyncio.run(run(parser.parse_args()))) + "\n")


if __name__ == "__main__":
    main()
