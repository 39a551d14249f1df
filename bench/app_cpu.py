"""CPU per request of each app's own ASGI stack, driven in-process without a server.

``bench.api`` measures what users see, but on a shared two-core machine its
ratio moves by ±10% between identical runs. This script answers a narrower
question with much less noise: how much CPU does one ``POST /update-tasks``
cost in the app's process (middleware, validation, asyncpg, response,
logging), leaving out what both apps share (hypercorn, h11, sockets to the
client)? Each contender runs in its own child process, which drives the ASGI
app directly (``concurrency`` tasks, each sending requests one after another)
against the real database, and reports ``time.process_time()`` per request.
Contenders alternate over the rounds; the table gives medians and ratios.

The service runs with ``WORKER_CONCURRENCY=0`` (no delivery in the process:
without a server nothing holds requests in flight, so consumers would deliver
at once and their CPU would be counted as the API's), everything else as in
``bench.api``: bearer auth, JSON access log at INFO (to a file), metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import database, processes, report
from bench.asgi_driver import RESULT_PREFIX


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    kind: str  # "baseline" or "service"
    idempotency: bool = False
    source: str | None = None  # another service source tree


@dataclass(frozen=True, slots=True)
class Measurement:
    contender: str
    round: int
    requests: int
    cpu_us: float  # process CPU per request
    wall_us: float  # wall time per request, at the given concurrency


def _run_child(
    contender: Contender, round_: int, args: argparse.Namespace, db_url: str, api_key: str
) -> Measurement:
    # The child imports ``bench`` from here and ``service`` from the source
    # tree it is given (bench/asgi_driver.py): a snapshot's own bench/ must
    # not shadow ours.
    env = {k: v for k, v in os.environ.items() if k != processes.SERVICE_SOURCE_VARIABLE}
    env["PYTHONPATH"] = str(report.REPO_ROOT)
    source = contender.source or os.environ.get(processes.SERVICE_SOURCE_VARIABLE)
    log_path = str(report.RESULTS_DIR / "logs" / f"app-cpu-{contender.name}.log")
    command = [
        sys.executable,
        "-m",
        "bench.asgi_driver",
        contender.kind,
        "--db-url",
        db_url,
        f"--api-key={api_key}",  # one argument: a random key may start with "-"
        "--log-path",
        log_path,
        "--requests",
        str(args.requests),
        "--warmup-requests",
        str(args.warmup_requests),
        "--concurrency",
        str(args.concurrency),
        "--tasks",
        str(args.tasks),
        "--users",
        str(args.users),
        "--per-request",
        str(args.per_request),
        "--seed",
        str(1000 * round_),
        *(["--idempotency"] if contender.idempotency else []),
        *(["--source", source] if source else []),
    ]
    # A scratch working directory: the current directory must not decide
    # which ``service`` package the child imports.
    with tempfile.TemporaryDirectory(prefix="bench-app-cpu-") as workdir:
        done = subprocess.run(
            command, env=env, cwd=workdir, capture_output=True, text=True, check=False
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{contender.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    expected = source or str(report.REPO_ROOT)
    if contender.kind == "service" and result.get("service_code") != expected:
        raise SystemExit(f"{contender.name} ran {result['service_code']}, not {expected}")
    return Measurement(contender.name, round_, args.requests, result["cpu_us"], result["wall_us"])


def _contenders(args: argparse.Namespace) -> list[Contender]:
    contenders = [Contender("baseline", "baseline")]
    sources: list[tuple[str, str | None]] = [("", None)]
    sources += [(f"@{Path(s).name}", str(Path(s).resolve())) for s in args.compare_source]
    for suffix, source in sources:
        contenders.append(Contender("service" + suffix, "service", source=source))
        if args.idempotency:
            contenders.append(
                Contender("service+idempotency" + suffix, "service", True, source=source)
            )
    return contenders


def _tables(runs: list[Measurement], contenders: list[Contender]) -> str:
    rows = [
        [str(r.round), r.contender, report.fmt(r.cpu_us, 0), report.fmt(r.wall_us, 0)] for r in runs
    ]
    per_round = report.table(["round", "app", "CPU µs/request", "wall µs/request"], rows)
    baseline = {r.round: r.cpu_us for r in runs if r.contender == "baseline"}
    summary = []
    for contender in contenders:
        mine = [r for r in runs if r.contender == contender.name]
        cpu = report.median([r.cpu_us for r in mine])
        ratios = [report.ratio(r.cpu_us, baseline[r.round]) for r in mine]
        spread = f"{min(r.cpu_us for r in mine):,.0f} to {max(r.cpu_us for r in mine):,.0f}"
        summary.append(
            [contender.name, report.fmt(cpu, 0), spread, report.fmt_ratio(report.median(ratios))]
        )
    return (
        per_round
        + "\n\nMedians over the rounds; the ratio is the median of the per-round ratios of CPU "
        "per request to the baseline's (lower is cheaper).\n\n"
        + report.table(["app", "CPU µs/request", "range", "vs baseline"], summary)
    )


async def main_async(args: argparse.Namespace) -> str:
    source = processes.use_service_source(args.service_source)
    contenders = _contenders(args)
    api_key = secrets.token_urlsafe(24)
    (report.RESULTS_DIR / "logs").mkdir(parents=True, exist_ok=True)
    async with database.bench_database("app_cpu", keep=args.keep_db) as db_url:
        pg_version = await database.postgres_version(db_url)
        await database.seed(db_url, users=args.users, tasks=args.tasks)
        runs: list[Measurement] = []
        for round_ in range(1, args.rounds + 1):
            for contender in contenders:
                await database.reset_outbox(db_url)
                run = await asyncio.to_thread(_run_child, contender, round_, args, db_url, api_key)
                sys.stderr.write(f"round {round_} {contender.name}: {run.cpu_us:,.0f} µs CPU\n")
                runs.append(run)
    notes = [
        source,
        f"{args.requests:,} requests per run after {args.warmup_requests:,} of warm-up, "
        f"{args.concurrency} concurrent tasks, {args.per_request} reassignments per request; "
        f"{args.rounds} rounds of: " + ", ".join(c.name for c in contenders),
        "in-process ASGI calls (no server, no sockets to a client); service with bearer auth, "
        "JSON access log at INFO to a file, metrics, WORKER_CONCURRENCY=0 (no delivery)",
    ]
    return report.header("App CPU per request: POST /update-tasks", pg_version, notes) + (
        "\n\n" + _tables(runs, contenders)
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.app_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="2 rounds of 1,000 requests")
    add("--requests", type=int, default=3_000, help="measured requests per run (3,000)")
    add("--warmup-requests", type=int, default=500)
    add("--rounds", type=int, default=5)
    add("--concurrency", type=int, default=10, help="concurrent client tasks (10, the pool)")
    add("--idempotency", action="store_true", help="also the service with Idempotency-Key")
    add("--tasks", type=int, default=100_000)
    add("--users", type=int, default=1_000)
    add("--per-request", type=int, default=10)
    add("--compare-source", action="append", default=[], help="also this service source tree")
    add("--service-source", help="run the service from this source tree (default: this one)")
    add("--keep-db", action="store_true", help="do not drop the benchmark database")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup_requests, args.rounds = 1_000, 200, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    text = asyncio.run(main_async(args))
    path = report.save("app-cpu", text)
    sys.stdout.write(text + f"\n\n(saved to {path.relative_to(report.REPO_ROOT)})\n")


if __name__ == "__main__":
    main()
