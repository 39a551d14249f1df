"""Memory benchmark: ``python -m bench.memory`` (``--quick`` for a run under a minute).

The provider is down (the fake Postmark answers every batch with a 503, or
with ``--down refuse`` nothing listens at all). The service starts on an
empty outbox; its idle RSS is read from /proc/<pid>/status. Then the
backlog accumulates (``--backlogs`` pending e-mails, inserted while it
runs) and the sweeper cycles through it: every row is offered, claimed,
rendered, refused by the provider and put back with a backoff, at least
once. Peak RSS (VmHWM) minus idle RSS is the growth; it must be bounded by
QUEUE_CAPACITY, not by the backlog, so two backlog sizes are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from bench import database, processes, report

_SAMPLE_SECONDS = 0.5
_IDLE_SETTLE_SECONDS = 3.0

NOT_YET_ATTEMPTED = "SELECT count(*) FROM notifications WHERE attempts = 0"
ATTEMPTS = "SELECT coalesce(sum(attempts), 0) FROM notifications"


@dataclass(frozen=True, slots=True)
class MemoryRun:
    backlog: int
    queue_capacity: int
    idle_mib: float
    peak_mib: float
    final_mib: float
    attempts: int
    cycle_seconds: float

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.idle_mib


@asynccontextmanager
async def _down_provider(mode: str) -> AsyncIterator[str]:
    if mode == "refuse":
        yield f"http://127.0.0.1:{processes.free_port()}"  # nothing listens there
        return
    async with processes.fake_provider("down") as provider:
        yield provider.url


async def measure(args: argparse.Namespace, db_url: str, backlog: int) -> MemoryRun:
    await database.reset_outbox(db_url)
    port = processes.free_port()
    settings = {
        "SWEEP_GRACE": "0",
        "QUEUE_CAPACITY": str(args.queue_capacity),
        **processes.parse_assignments(args.service_env),
    }
    conn = await asyncpg.connect(db_url)
    try:
        async with (
            _down_provider(args.down) as provider_url,
            processes.running(
                "service",
                "service",
                processes.service_settings(db_url, port, provider_url, settings),
                port=port,
                ready_path="/readyz",
            ) as child,
        ):
            await asyncio.sleep(_IDLE_SETTLE_SECONDS)
            idle = processes.read_memory(child.pid)
            started = time.monotonic()
            await database.prefill_outbox(db_url, rows=backlog, users=args.users, tasks_per_email=3)
            deadline = started + args.timeout
            while await conn.fetchval(NOT_YET_ATTEMPTED):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"backlog not cycled through in {args.timeout:.0f} s")
                await asyncio.sleep(_SAMPLE_SECONDS)
            cycle = time.monotonic() - started
            await asyncio.sleep(args.settle)  # retries keep coming back: more sweeps
            final = processes.read_memory(child.pid)
            attempts = await conn.fetchval(ATTEMPTS)
    finally:
        await conn.close()
    return MemoryRun(
        backlog, args.queue_capacity, idle.rss, final.peak_rss, final.rss, attempts, cycle
    )


def _table(runs: list[MemoryRun]) -> str:
    rows = [
        [
            f"{run.backlog:,}",
            str(run.queue_capacity),
            report.fmt(run.idle_mib),
            report.fmt(run.peak_mib),
            report.fmt(run.growth_mib),
            report.fmt(run.final_mib),
            f"{run.attempts:,}",
            report.fmt(run.cycle_seconds),
        ]
        for run in runs
    ]
    headers = [
        "backlog",
        "QUEUE_CAPACITY",
        "idle RSS MiB",
        "peak RSS MiB (VmHWM)",
        "growth MiB",
        "RSS at end MiB",
        "delivery attempts",
        "s to attempt every row",
    ]
    return (
        report.table(headers, rows)
        + "\n\nTarget: growth under 50 MB with a 100,000 backlog, and about the same "
        "whatever the backlog (bounded by QUEUE_CAPACITY)."
    )


async def main_async(args: argparse.Namespace) -> str:
    source = processes.use_service_source(args.service_source)
    runs: list[MemoryRun] = []
    async with database.bench_database("memory", keep=args.keep_db) as db_url:
        pg_version = await database.postgres_version(db_url)
        await database.seed(db_url, users=args.users, tasks=1)
        for backlog in args.backlogs:
            runs.append(await measure(args, db_url, backlog))
            run = runs[-1]
            sys.stderr.write(
                f"backlog {backlog:,}: idle {run.idle_mib:.1f} MiB, peak {run.peak_mib:.1f} MiB\n"
            )
    down = "503 for every batch" if args.down == "503" else "connection refused"
    notes = [
        source,
        f"provider down: {down}; service with SWEEP_GRACE=0, QUEUE_CAPACITY "
        f"{args.queue_capacity}, otherwise defaults (WORKER_CONCURRENCY 1, BATCH_SIZE 250, "
        "MAX_ATTEMPTS 15, RETRY_BASE_SECONDS 1)",
        "backlog inserted while the service runs (3 tasks per e-mail); peak read after every "
        f"row was attempted at least once and {args.settle:g} s more of retries",
    ]
    return (
        report.header("Memory: provider down, backlog", pg_version, notes) + "\n\n" + _table(runs)
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="backlogs of 2,000 and 20,000")
    add("--backlogs", default="10000,100000", help="pending e-mails per run (10000,100000)")
    add("--queue-capacity", type=int, default=1000)
    add("--down", choices=["503", "refuse"], default="503")
    add("--settle", type=float, default=5.0, help="seconds of retries after the first cycle")
    add("--users", type=int, default=1_000)
    add("--service-env", action="append", default=[], help="NAME=VALUE for the service")
    add("--timeout", type=float, default=600.0)
    add("--service-source", help="run the service from this source tree (default: this one)")
    add("--keep-db", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.backlogs, args.settle = "2000,20000", 3.0
    args.backlogs = [int(b) for b in str(args.backlogs).split(",") if b]
    return args


def main(argv: list[str] | None = None) -> None:
    text = asyncio.run(main_async(parse_args(argv)))
    path = report.save("memory", text)
    sys.stdout.write(text + f"\n\n(saved to {path.relative_to(report.REPO_ROOT)})\n")


if __name__ == "__main__":
    main()
