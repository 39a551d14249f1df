"""The delivery baseline: pgqueuer draining no-op jobs on the benchmark database.

``python -m bench.pgqueuer_baseline --jobs 50000`` (env DATABASE_URL)
installs pgqueuer's tables if needed, enqueues ``--jobs`` no-op jobs, runs
one ``QueueManager`` (asyncpg driver, ``--batch-size`` jobs per dequeue) in
drain mode until the queue is empty, and prints one JSON line. The rate is
taken between the first and the last job, as the service's is between its
first and last ``sent_at``, so process start-up counts for neither.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.domain.types import QueueExecutionMode

from bench.processes import postgres_cpu_seconds, postgres_cpu_since

_ENQUEUE_CHUNK = 5_000
ENTRYPOINT = "bench_noop"


async def run(jobs: int, batch_size: int) -> dict[str, float | None]:
    dsn = os.environ["DATABASE_URL"]
    setup = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(setup))
        if not await queries.schema_is_installed():
            await queries.install()
        await queries.clear_queue()
        for start in range(0, jobs, _ENQUEUE_CHUNK):
            count = min(_ENQUEUE_CHUNK, jobs - start)
            await queries.enqueue([ENTRYPOINT] * count, [None] * count, [0] * count)
        await setup.execute("VACUUM ANALYZE pgqueuer")
    finally:
        await setup.close()

    conn = await asyncpg.connect(dsn)
    done: list[float] = []
    try:
        manager = QueueManager(Queries(AsyncpgDriver(conn)))

        @manager.entrypoint(ENTRYPOINT)  # type: ignore[untyped-decorator,unused-ignore]
        async def noop(job: Job) -> None:
            done.append(time.perf_counter())

        started, cpu_started = time.perf_counter(), time.process_time()
        postgres_started = postgres_cpu_seconds()
        await manager.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
        finished, cpu = time.perf_counter(), time.process_time() - cpu_started
        postgres = postgres_cpu_since(postgres_started)
    finally:
        await conn.close()
    span = done[-1] - done[0] if len(done) > 1 else 0.0
    return {
        "jobs": len(done),
        "seconds": span,
        "jobs_per_second": (len(done) - 1) / span if span else 0.0,
        "wall_seconds": finished - started,
        "cpu_seconds": cpu,
        "postgres_cpu_seconds": postgres,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pgqueuer_baseline", description=__doc__)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=10, help="pgqueuer's default (10)")
    args = parser.parse_args()
    result = asyncio.run(run(args.jobs, args.batch_size))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
