"""API benchmark: ``python -m bench.api`` (``--quick`` for a run under a minute).

``POST /update-tasks`` with 10 reassignments per request, 64 connections,
wrk (or the pure-Python fallback), against the service (``python -m
service`` on hypercorn, one process, everything it has switched on, e-mails
delivered in the background to a fake Postmark in another process) and
against the bare baseline (``bench.baseline_app``: Starlette + hypercorn +
asyncpg, the same transaction, nothing else). With API_KEYS set, the service
gets a bearer key on every request; the ``service+idempotency`` variant also
sends a unique Idempotency-Key. They run back to back, alternating (baseline,
service, service+idempotency, baseline, ...), each from an empty outbox; the
table gives every run, the app's CPU per request, and the median of the
per-round ratios. ``--compare-source DIR`` adds the service from another
source tree (a patched copy) to every round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg

from bench import database, features, load, processes, report
from bench.load import LoadResult, Workload

VARIANTS = ("service", "service+idempotency")


@dataclass(frozen=True, slots=True)
class Run:
    round: int
    app: str
    result: LoadResult
    emails_per_request: float
    delivered: float  # share of the run's e-mails already sent when it ended
    app_cpu: float  # cores used by the app's process during the measured run
    machine_cpu: float  # share of all cores busy during the measured run
    stolen_cpu: float  # share of all cores stolen by the hypervisor (noisy neighbours)

    @property
    def cpu_ms_per_request(self) -> float:
        seconds = self.result.seconds * self.app_cpu
        return 1000 * seconds / self.result.requests if self.result.requests else 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """One app under load: how to start it and what its requests carry."""

    name: str
    module: str
    ready_path: str
    env: dict[str, str]
    workload: Workload


def _probe(url: str, workload: Workload) -> None:
    """One request before the load: a 401 or 422 would make the numbers meaningless."""
    body = json.dumps(
        [{"task_id": j, "assignee_id": j} for j in range(1, workload.per_request + 1)]
    ).encode()
    request = urllib.request.Request(
        url + workload.path,
        data=body,
        headers={"Content-Type": "application/json", **(workload.headers or {})},
    )
    if workload.idempotency_keys:
        request.add_header("Idempotency-Key", "bench-probe")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(
            f"{url}{workload.path} answered {exc.code}: {exc.read()[:500]!r}\n"
            "If the service's auth changed, pass --header 'Authorization: ...' and the "
            "service's setting with --service-env NAME=VALUE (and --no-auth)."
        ) from None


async def _outbox_counts(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        counts = await database.count_by_status(conn)
    finally:
        await conn.close()
    return sum(counts.values()), counts.get("sent", 0)


async def _measure(target: Target, round_: int, args: argparse.Namespace, db_url: str) -> Run:
    await database.reset_outbox(db_url)
    port = processes.free_port()
    env = {**target.env, "DATABASE_URL": db_url, "PORT": str(port)}
    async with processes.running(
        target.name.replace("+", "-"), target.module, env, port=port, ready_path=target.ready_path
    ) as child:
        _probe(child.url, target.workload)
        warmup = await load.run_closed_loop(
            args.generator,
            child.url,
            target.workload,
            connections=args.connections,
            seconds=args.warmup,
            threads=args.threads,
        )
        cpu_before, machine_before = processes.cpu_seconds(child.pid), processes.machine_cpu()
        result = await load.run_closed_loop(
            args.generator,
            child.url,
            target.workload,
            connections=args.connections,
            seconds=args.duration,
            threads=args.threads,
        )
        cpu_after, machine_after = processes.cpu_seconds(child.pid), processes.machine_cpu()
        written, sent = await _outbox_counts(db_url)
    if result.failed or warmup.failed:
        sys.stderr.write(f"{target.name}: errors during the run: {result}\n{child.log_tail()}\n")
    requests = 1 + warmup.requests + result.requests
    return Run(
        round=round_,
        app=target.name,
        result=result,
        emails_per_request=written / requests if requests else 0.0,
        delivered=sent / written if written else 0.0,
        app_cpu=(cpu_after - cpu_before) / result.seconds if result.seconds else 0.0,
        machine_cpu=machine_after.since(machine_before)[0],
        stolen_cpu=machine_after.since(machine_before)[1],
    )


def _targets(args: argparse.Namespace, provider_url: str) -> list[Target]:
    """The baseline first, then each service variant, all with the same request bodies."""
    headers: dict[str, str] = {}
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    service_env = processes.parse_assignments(args.service_env)
    if not args.no_auth and features.has_setting("api_keys"):
        key = secrets.token_urlsafe(24)
        service_env.setdefault("API_KEYS", f"bench:{key}")
        headers.setdefault("Authorization", f"Bearer {key}")
    plain = Workload(
        tasks=args.tasks, users=args.users, per_request=args.per_request, headers=headers
    )
    targets = [
        Target(
            "baseline",
            "bench.baseline_app",
            "/healthz",
            {},
            Workload(tasks=args.tasks, users=args.users, per_request=args.per_request),
        )
    ]
    env = processes.service_settings("", 0, provider_url, service_env)
    sources = [("", None)] + [
        (f"@{Path(source).name}", str(Path(source).resolve())) for source in args.compare_source
    ]
    for suffix, source in sources:
        source_env = env if source is None else {**env, processes.SERVICE_SOURCE_VARIABLE: source}
        for variant in args.variants:
            idempotent = variant == "service+idempotency"
            workload = replace(plain, idempotency_keys=idempotent)
            targets.append(Target(variant + suffix, "service", "/readyz", source_env, workload))
    return targets


async def _db_loop(args: argparse.Namespace, db_url: str, statement: str) -> dict[str, float]:
    await database.reset_outbox(db_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.db_loop",
        "--statement",
        statement,
        "--seconds",
        str(args.duration),
        "--concurrency",
        str(args.connections),
        "--tasks",
        str(args.tasks),
        "--users",
        str(args.users),
        env={**processes.child_environment({}), "DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.db_loop --statement {statement} failed")
    result: dict[str, float] = json.loads(output)
    return result


def _tables(runs: list[Run], db_loops: dict[str, dict[str, float]]) -> str:
    per_run = [
        [
            str(run.round),
            run.app,
            report.fmt(run.result.rps),
            report.fmt(run.result.p50_ms),
            report.fmt(run.result.p99_ms),
            str(run.result.non2xx + run.result.socket_errors),
            f"{run.app_cpu:.0%}",
            report.fmt(run.cpu_ms_per_request, 2),
            f"{run.machine_cpu:.0%} / {run.stolen_cpu:.0%}",
            report.fmt(run.emails_per_request, 2),
            f"{run.delivered:.0%}" if run.app != "baseline" else "-",
        ]
        for run in runs
    ]
    by_round: dict[int, dict[str, Run]] = {}
    for run in runs:
        by_round.setdefault(run.round, {})[run.app] = run
    apps = list(dict.fromkeys(run.app for run in runs))
    # App CPU per request is the steadiest of these on a shared machine: the
    # rates move with whatever else runs, the CPU a request costs much less.
    metrics: list[tuple[Callable[[Run], float], int]] = [
        (lambda run: run.result.rps, 1),
        (lambda run: run.result.p50_ms, 1),
        (lambda run: run.result.p99_ms, 1),
        (lambda run: run.cpu_ms_per_request, 2),
    ]
    summary = []
    for app in apps:
        mine = [r[app] for r in by_round.values() if app in r]
        row = [app]
        for metric, digits in metrics:
            row.append(report.fmt(report.median([metric(run) for run in mine]), digits))
            if app != "baseline":
                ratios = [
                    report.ratio(metric(r[app]), metric(r["baseline"]))
                    for r in by_round.values()
                    if app in r and "baseline" in r
                ]
                row[-1] += f" ({report.fmt_ratio(report.median(ratios))})"
        summary.append(row)
    parts = [
        report.table(
            [
                "round",
                "app",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "app CPU (1 core = 100%)",
                "app CPU ms/request",
                "machine CPU busy / stolen",
                "e-mails/request*",
                "sent by end of run",
            ],
            per_run,
        ),
        "",
        "Medians over the rounds; in brackets the median of the per-round ratios to the "
        "baseline (requests/s: higher is better; latency and CPU: lower is better).",
        "",
        report.table(["app", "requests/s", "p50 ms", "p99 ms", "app CPU ms/request"], summary),
        "",
        "*outbox rows written / requests counted by the load generator; slightly above 10 "
        "because requests still in flight when a run stops are written but not counted.",
    ]
    if db_loops:
        rows = [
            [
                name,
                report.fmt(r["transactions"] / r["seconds"]),
                report.fmt(r["p50_ms"]),
                report.fmt(r["p99_ms"]),
            ]
            for name, r in db_loops.items()
        ]
        parts += [
            "",
            "The transaction alone from a bare asyncpg loop, no HTTP "
            "(same concurrency, pool of 10, bench/db_loop.py):",
            "",
            report.table(["transaction", "transactions/s", "p50 ms", "p99 ms"], rows),
        ]
    return "\n".join(parts)


async def main_async(args: argparse.Namespace) -> str:
    source = processes.use_service_source(args.service_source)
    args.generator = load.choose_generator(args.load_generator)
    async with database.bench_database("api", keep=args.keep_db) as db_url:
        pg_version = await database.postgres_version(db_url)
        await database.seed(db_url, users=args.users, tasks=args.tasks)
        runs: list[Run] = []
        async with processes.fake_provider() as provider:
            targets = _targets(args, provider.url)
            for round_ in range(1, args.rounds + 1):
                for target in targets:
                    run = await _measure(target, round_, args, db_url)
                    sys.stderr.write(
                        f"round {round_} {target.name}: {run.result.rps:,.0f} req/s, "
                        f"p50 {run.result.p50_ms:.1f} ms, p99 {run.result.p99_ms:.1f} ms\n"
                    )
                    runs.append(run)
        db_loops: dict[str, dict[str, float]] = {}
        if args.db_loop:
            db_loops["baseline: BEGIN; UPDATE; INSERT; COMMIT"] = await _db_loop(
                args, db_url, "baseline"
            )
            db_loops["service: UPDATE_TASKS (one statement)"] = await _db_loop(
                args, db_url, "service"
            )
    service_env = targets[-1].env
    notes = [
        source,
        f"load: {runs[0].result.tool}, {args.duration:g} s per run after {args.warmup:g} s of "
        f"warm-up; {args.per_request} reassignments per request (random block of tasks out of "
        f"{args.tasks:,}, distinct users out of {args.users:,}); {args.rounds} round(s), "
        "each: " + ", ".join(t.name for t in targets),
        "baseline: bench/baseline_app.py: Starlette + hypercorn + asyncpg pool of 10; "
        "BEGIN, UPDATE, INSERT, COMMIT (4 round trips) and a memory-stream send; "
        "no validation, no auth, no metrics, no logging, no delivery",
        "service: python -m service, one hypercorn process, default settings (pool 10, "
        "QUEUE_CAPACITY 1000, WORKER_CONCURRENCY 1, LOG_LEVEL INFO, LOG_FORMAT json); "
        "service+idempotency: the same with a unique Idempotency-Key on every request",
        *features.describe(service_env, auth=bool(targets[-1].workload.headers)),
    ]
    title = "API: POST /update-tasks"
    return report.header(title, pg_version, notes) + "\n\n" + _tables(runs, db_loops)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="1 round of 5 s runs (under a minute)")
    add("--duration", type=float, default=15.0, help="seconds per measured run (15)")
    add("--warmup", type=float, default=3.0, help="seconds of load before each run (3)")
    add("--rounds", type=int, default=2, help="rounds of baseline then each variant (2)")
    add("--variants", default=",".join(VARIANTS), help=f"service variants ({','.join(VARIANTS)})")
    add("--connections", type=int, default=64)
    add("--threads", type=int, default=2, help="wrk threads (2)")
    add("--tasks", type=int, default=100_000)
    add("--users", type=int, default=1_000)
    add("--per-request", type=int, default=10)
    add("--load-generator", choices=["auto", "wrk", "python"], default="auto")
    add("--no-auth", action="store_true", help="do not set API_KEYS / send a bearer key")
    add("--header", action="append", default=[], help="'Name: value' on every service request")
    add("--service-env", action="append", default=[], help="NAME=VALUE for the service")
    add(
        "--compare-source",
        action="append",
        default=[],
        help="also run the service variants from this source tree (e.g. a patched copy)",
    )
    add("--db-loop", action="store_true", help="also time both transactions without HTTP")
    add("--service-source", help="run the service from this source tree (default: this one)")
    add("--keep-db", action="store_true", help="do not drop the benchmark database")
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if args.quick:
        args.duration, args.warmup, args.rounds = 5.0, 1.0, 1
    return args


def main(argv: list[str] | None = None) -> None:
    text = asyncio.run(main_async(parse_args(argv)))
    path = report.save("api", text)
    sys.stdout.write(text + f"\n\n(saved to {path.relative_to(report.REPO_ROOT)})\n")


if __name__ == "__main__":
    main()
