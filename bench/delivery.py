"""Delivery benchmark: ``python -m bench.delivery`` (``--quick`` for a run under a minute).

1. Throughput. The outbox is pre-filled with ``--rows`` pending e-mails
   (SQL, the snapshot shape UPDATE_TASKS writes); the service starts with
   WORKER_CONCURRENCY = 1, 2, 4 and SWEEP_GRACE=0, so the sweeper feeds the
   backlog to the consumers, which render real e-mails and post them to a
   fake Postmark (its own process, answers at once). Rate = e-mails sent
   between the first and the last ``sent_at``.
2. Baseline in the same run: pgqueuer (PyPI) draining as many no-op jobs on
   the same database, before and after the service runs.
3. Latency. ``POST /update-tasks`` at steady (open-loop) rates: 10%, 25% and
   50% of the best measured e-mail rate (or ``--latency-rates``);
   commit-to-accepted latency is ``sent_at - created_at`` of each row (both
   the database's ``now()``: the start of the writing and of the recording
   transaction). ``--replicas N`` runs N service processes on the same
   database, the load spread evenly over them.

Every row also reports the CPU time the service's (or pgqueuer's) process
spent per e-mail (job), and that of the local PostgreSQL server: on a
shared, noisy machine that is steadier than a rate, and at a steady load it
tells how much of the machine the load takes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import asyncpg

from bench import database, load, processes, report
from bench.load import LoadResult, Workload

_POLL_SECONDS = 0.5
# A load "kept up" when no e-mail waited a second: the backlog did not grow.
_KEPT_UP_P99_MS = 1000.0

DRAIN_STATS = """
SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       min(sent_at) AS first, max(sent_at) AS last,
       count(*) FILTER (WHERE sent_at = (SELECT min(sent_at) FROM notifications)) AS first_batch
FROM notifications
"""

LATENCY_STATS = """
SELECT count(*) AS rows,
       count(*) FILTER (WHERE status = 'sent') AS sent,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY sent_at - created_at) AS p50,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY sent_at - created_at) AS p99,
       max(sent_at - created_at) AS max
FROM notifications
WHERE created_at >= $1 AND created_at < $2
"""

UNFINISHED = "SELECT count(*) FROM notifications WHERE status IN ('pending', 'sending')"


@dataclass(frozen=True, slots=True)
class Drain:
    label: str
    consumers: int
    sent: int
    rate: float
    wall_seconds: float
    cpu_us_per_item: float  # CPU of the service's (or pgqueuer's) process per e-mail (job)
    postgres_us_per_item: float  # CPU of the local PostgreSQL server per e-mail (job)


@dataclass(frozen=True, slots=True)
class Latency:
    replicas: int
    consumers: int  # per replica
    target_rate: float
    emails: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    http: LoadResult
    cpu: WindowCpu


@dataclass(frozen=True, slots=True)
class WindowCpu:
    """CPU used during the measured window, by the service and by PostgreSQL."""

    seconds: float  # wall time of the window
    service: float
    postgres: float | None  # None: the server is not on this machine

    def cores(self, cpu: float | None) -> float:
        return cpu / self.seconds if cpu is not None and self.seconds else math.nan

    def per_item_us(self, cpu: float | None, items: int) -> float:
        return 1e6 * cpu / items if cpu is not None and items else math.nan


@dataclass(slots=True)
class _CpuMeter:
    pids: list[int]  # the service's processes (replicas)
    started: float = 0.0
    service: float = 0.0
    postgres: float | None = None

    def _service_cpu(self) -> float:
        return sum(processes.cpu_seconds(pid) for pid in self.pids)

    def start(self) -> None:
        self.started = time.monotonic()
        self.service = self._service_cpu()
        self.postgres = processes.postgres_cpu_seconds()

    def stop(self) -> WindowCpu:
        return WindowCpu(
            seconds=time.monotonic() - self.started,
            service=self._service_cpu() - self.service,
            postgres=processes.postgres_cpu_since(self.postgres),
        )


async def _wait_until_done(conn: asyncpg.Connection, limit_seconds: float) -> None:
    deadline = time.monotonic() + limit_seconds
    while await conn.fetchval(UNFINISHED):
        if time.monotonic() > deadline:
            raise RuntimeError(f"e-mails still unsent after {limit_seconds:.0f} s")
        await asyncio.sleep(_POLL_SECONDS)


def _service_env(
    args: argparse.Namespace, db_url: str, port: int, provider: str, consumers: int, **extra: str
) -> dict[str, str]:
    settings = {"WORKER_CONCURRENCY": str(consumers), **extra}
    settings.update(processes.parse_assignments(args.service_env))
    return processes.service_settings(db_url, port, provider, settings)


async def drain_service(
    args: argparse.Namespace, db_url: str, provider_url: str, consumers: int
) -> Drain:
    await database.reset_outbox(db_url)
    await database.prefill_outbox(
        db_url, rows=args.rows, users=args.users, tasks_per_email=args.tasks_per_email
    )
    port = processes.free_port()
    env = _service_env(args, db_url, port, provider_url, consumers, SWEEP_GRACE="0")
    started = time.monotonic()
    conn = await asyncpg.connect(db_url)
    try:
        async with processes.running(
            "service", "service", env, port=port, ready_path="/readyz"
        ) as child:
            meter = _CpuMeter([child.pid])
            meter.start()
            await _wait_until_done(conn, args.timeout)
            wall = time.monotonic() - started
            cpu = meter.stop()
        stats = await conn.fetchrow(DRAIN_STATS)
    finally:
        await conn.close()
    assert stats is not None
    span = (stats["last"] - stats["first"]).total_seconds() if stats["sent"] else 0.0
    rate = (stats["sent"] - stats["first_batch"]) / span if span else 0.0
    label = f"service, {consumers} consumer(s)"
    return Drain(
        label,
        consumers,
        stats["sent"],
        rate,
        wall,
        cpu.per_item_us(cpu.service, stats["sent"]),
        cpu.per_item_us(cpu.postgres, stats["sent"]),
    )


async def drain_pgqueuer(args: argparse.Namespace, db_url: str, label: str) -> Drain:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.pgqueuer_baseline",
        "--jobs",
        str(args.rows),
        "--batch-size",
        str(args.pgqueuer_batch_size),
        env={**processes.child_environment({}), "DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError("bench.pgqueuer_baseline failed (is pgqueuer installed? see docs)")
    result = json.loads(output)
    jobs, rate, wall = result["jobs"], result["jobs_per_second"], result["wall_seconds"]
    # pgqueuer's process stands where the service's does.
    cpu = WindowCpu(wall, result["cpu_seconds"], result["postgres_cpu_seconds"])
    return Drain(
        label,
        0,
        jobs,
        rate,
        wall,
        cpu.per_item_us(cpu.service, jobs),
        cpu.per_item_us(cpu.postgres, jobs),
    )


async def measure_latency(
    args: argparse.Namespace, db_url: str, provider_url: str, consumers: int, rate: float
) -> Latency:
    await database.reset_outbox(db_url)
    workload = Workload(tasks=args.tasks, users=args.users, per_request=args.per_request)
    request_rate = rate / args.per_request
    conn = await asyncpg.connect(db_url)
    try:
        async with contextlib.AsyncExitStack() as replicas:
            children = []
            for _ in range(args.replicas):
                port = processes.free_port()
                env = _service_env(args, db_url, port, provider_url, consumers)
                children.append(
                    await replicas.enter_async_context(
                        processes.running(
                            "service", "service", env, port=port, ready_path="/readyz"
                        )
                    )
                )
            urls = [child.url for child in children]
            await load.run_paced(urls, workload, rate=request_rate, seconds=args.warmup)
            window_start = await conn.fetchval("SELECT clock_timestamp()")
            meter = _CpuMeter([child.pid for child in children])
            meter.start()
            http = await load.run_paced(
                urls, workload, rate=request_rate, seconds=args.latency_seconds
            )
            cpu = meter.stop()
            window_end = await conn.fetchval("SELECT clock_timestamp()")
            await _wait_until_done(conn, args.timeout)
        stats = await conn.fetchrow(LATENCY_STATS, window_start, window_end)
    finally:
        await conn.close()
    assert stats is not None

    def ms(value: object) -> float:
        return value.total_seconds() * 1000 if hasattr(value, "total_seconds") else float("nan")

    return Latency(
        args.replicas,
        consumers,
        rate,
        stats["sent"],
        ms(stats["p50"]),
        ms(stats["p99"]),
        ms(stats["max"]),
        http,
        cpu,
    )


def _share(rate: float, best_rate: float) -> str:
    return "" if math.isnan(best_rate) else f" ({rate / best_rate:.0%} of best)"


def _latency_table(latencies: list[Latency], best_rate: float) -> str:
    rows = [
        [
            f"{lat.target_rate:,.0f} e-mails/s{_share(lat.target_rate, best_rate)}, "
            f"{lat.http.rps:,.0f} requests/s",
            str(lat.consumers) if lat.replicas == 1 else f"{lat.replicas} x {lat.consumers}",
            f"{lat.emails:,}",
            report.fmt(lat.p50_ms),
            report.fmt(lat.p99_ms),
            report.fmt(lat.max_ms),
            f"{report.fmt(lat.http.p50_ms)} / {report.fmt(lat.http.p99_ms)}",
            f"{report.fmt(lat.cpu.cores(lat.cpu.service), 2)} / "
            f"{report.fmt(lat.cpu.cores(lat.cpu.postgres), 2)}",
            f"{report.fmt(lat.cpu.per_item_us(lat.cpu.service, lat.emails), 0)} / "
            f"{report.fmt(lat.cpu.per_item_us(lat.cpu.postgres, lat.emails), 0)}",
        ]
        for lat in latencies
    ]
    headers = [
        "steady load",
        "consumers" if all(lat.replicas == 1 for lat in latencies) else "replicas x consumers",
        "e-mails measured",
        "commit-to-accepted p50 ms",
        "p99 ms",
        "max ms",
        "HTTP p50 / p99 ms",
        "CPU cores: service / PostgreSQL",
        "CPU µs per e-mail: service / PostgreSQL",
    ]
    notes = [
        "Target: p50 under 10 ms and p99 under 50 ms at half the best rate.",
        "CPU is measured over the load window: the service's process, and every local "
        "PostgreSQL process (n/a when the server is elsewhere); per e-mail is per e-mail "
        "written in the window, its request included.",
    ]
    projection = _half_load_projection(latencies, best_rate)
    if projection:
        notes.append(projection)
    return report.table(headers, rows) + "\n\n" + "\n".join(notes)


def _half_load_projection(latencies: list[Latency], best_rate: float) -> str:
    """What half the best rate costs, by the CPU per e-mail at the busiest load that kept up."""
    kept_up = [lat for lat in latencies if lat.p99_ms < _KEPT_UP_P99_MS and lat.emails]
    if math.isnan(best_rate) or not kept_up:
        return ""
    basis = max(kept_up, key=lambda lat: lat.target_rate)
    half = best_rate / 2
    service = half * basis.cpu.per_item_us(basis.cpu.service, basis.emails) / 1e6
    postgres = half * basis.cpu.per_item_us(basis.cpu.postgres, basis.emails) / 1e6
    return (
        f"At half the best rate ({half:,.0f} e-mails/s) the CPU per e-mail measured at "
        f"{basis.target_rate:,.0f} e-mails/s comes to {service:.2f} cores for the service "
        f"(one event loop per process: at most 1 each) and {report.fmt(postgres, 2)} for "
        f"PostgreSQL, on a machine with {os.cpu_count()} cores."
    )


def _tables(drains: list[Drain], latencies: list[Latency], best_rate: float) -> str:
    if not drains:
        return _latency_table(latencies, best_rate)
    baseline = report.median([d.rate for d in drains if d.consumers == 0])
    rows = [
        [
            d.label,
            f"{d.sent:,}",
            report.fmt(d.rate, 0),
            report.fmt(d.wall_seconds),
            report.fmt(d.cpu_us_per_item, 0),
            report.fmt(d.postgres_us_per_item, 0),
            report.fmt_ratio(report.ratio(d.rate, baseline)) if d.consumers else "-",
        ]
        for d in drains
    ]
    parts = [
        report.table(
            [
                "run",
                "e-mails / jobs",
                "per second",
                "wall s (start to all done)",
                "process CPU µs per item",
                "PostgreSQL CPU µs per item",
                "vs pgqueuer",
            ],
            rows,
        ),
        "",
        f"pgqueuer baseline (median of its runs): {report.fmt(baseline, 0)} no-op jobs/s. "
        "Target: the service at least 2x, while rendering and posting real e-mails.",
    ]
    if latencies:
        parts += ["", _latency_table(latencies, best_rate)]
    return "\n".join(parts)


async def _throughput(args: argparse.Namespace, db_url: str, provider_url: str) -> list[Drain]:
    """pgqueuer, the service with each consumer count, pgqueuer again."""
    drains = [await drain_pgqueuer(args, db_url, "pgqueuer no-op jobs (before)")]
    sys.stderr.write(f"{drains[-1].label}: {drains[-1].rate:,.0f}/s\n")
    for consumers in args.consumers:
        drains.append(await drain_service(args, db_url, provider_url, consumers))
        sys.stderr.write(f"{drains[-1].label}: {drains[-1].rate:,.0f}/s\n")
    drains.append(await drain_pgqueuer(args, db_url, "pgqueuer no-op jobs (after)"))
    sys.stderr.write(f"{drains[-1].label}: {drains[-1].rate:,.0f}/s\n")
    return drains


async def main_async(args: argparse.Namespace) -> str:
    source = processes.use_service_source(args.service_source)
    async with database.bench_database("delivery", keep=args.keep_db) as db_url:
        pg_version = await database.postgres_version(db_url)
        await database.seed(db_url, users=args.users, tasks=args.tasks)
        drains: list[Drain] = []
        latencies: list[Latency] = []
        async with processes.fake_provider() as provider:
            if not args.latency_only:
                drains = await _throughput(args, db_url, provider.url)
            if args.latency_rates:
                consumers, best_rate = args.consumers[-1], float("nan")
                rates = args.latency_rates
            else:
                best = max((d for d in drains if d.consumers), key=lambda d: d.rate)
                consumers, best_rate = best.consumers, best.rate
                rates = [best.rate * share for share in args.latency_loads]
            for rate in rates if args.latency_seconds > 0 else []:
                latencies.append(await measure_latency(args, db_url, provider.url, consumers, rate))
                sys.stderr.write(
                    f"latency at {rate:,.0f}/s: p50 {latencies[-1].p50_ms:.1f} ms, "
                    f"p99 {latencies[-1].p99_ms:.1f} ms\n"
                )
    notes = [
        source,
        f"throughput: {args.rows:,} pre-filled e-mails ({args.tasks_per_email} task(s) each), "
        "service with SWEEP_GRACE=0 and otherwise default settings (BATCH_SIZE 250, "
        "BATCH_LINGER 0, pool 10, LOG_LEVEL INFO, LOG_FORMAT json), EMAIL_PROVIDER=postmark "
        "against bench/fake_provider.py",
        f"pgqueuer: {args.rows:,} no-op jobs, one QueueManager on one asyncpg connection, "
        f"batch_size {args.pgqueuer_batch_size}, drain mode",
        f"latency: open-loop POST /update-tasks ({args.per_request} e-mails per request) at "
        f"{', '.join(f'{x:.0%}' for x in args.latency_loads)} of the best rate, "
        f"with its consumer count, {args.latency_seconds:g} s each after "
        f"{args.warmup:g} s of warm-up, default SWEEP_GRACE"
        + (f", {args.replicas} service processes sharing the load" if args.replicas > 1 else ""),
    ]
    title = "Delivery: outbox to provider"
    return report.header(title, pg_version, notes) + "\n\n" + _tables(drains, latencies, best_rate)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.delivery",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="10,000 rows, consumers 1,4, 5 s latency runs")
    add("--rows", type=int, default=50_000, help="pre-filled e-mails and pgqueuer jobs")
    add("--consumers", default="1,2,4", help="WORKER_CONCURRENCY values (1,2,4)")
    add("--tasks-per-email", type=int, default=1)
    add("--latency-seconds", type=float, default=15.0, help="0 skips the latency run")
    add("--latency-loads", default="0.1,0.25,0.5", help="shares of the best rate (0.1,0.25,0.5)")
    add("--latency-rates", default="", help="absolute e-mails/s instead of shares of the best")
    add("--latency-only", action="store_true", help="skip the throughput runs (needs rates)")
    add("--replicas", type=int, default=1, help="service processes for the latency runs (1)")
    add("--warmup", type=float, default=2.0)
    add("--per-request", type=int, default=10)
    add("--tasks", type=int, default=100_000)
    add("--users", type=int, default=1_000)
    add("--pgqueuer-batch-size", type=int, default=10)
    add("--service-env", action="append", default=[], help="NAME=VALUE for the service")
    add("--timeout", type=float, default=300.0, help="seconds to wait for a drain")
    add("--service-source", help="run the service from this source tree (default: this one)")
    add("--keep-db", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.consumers, args.latency_seconds = 10_000, "1,4", 5.0
        args.latency_loads = "0.1,0.5"
    args.consumers = [int(c) for c in str(args.consumers).split(",") if c]
    args.latency_loads = [float(x) for x in str(args.latency_loads).split(",") if x]
    args.latency_rates = [float(x) for x in str(args.latency_rates).split(",") if x]
    if args.latency_only and not args.latency_rates:
        parser.error("--latency-only needs --latency-rates")
    return args


def main(argv: list[str] | None = None) -> None:
    text = asyncio.run(main_async(parse_args(argv)))
    path = report.save("delivery", text)
    sys.stdout.write(text + f"\n\n(saved to {path.relative_to(report.REPO_ROOT)})\n")


if __name__ == "__main__":
    main()
